"""What both stand-ins share: scripted replies, the record of received pushes, and key material."""

from __future__ import annotations

import datetime
import ipaddress
import json
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Reply:
    """One scripted answer.

    Attributes:
        status: HTTP status.
        code: FCM ``errorCode`` or APNs ``reason``.
        retry_after: ``Retry-After`` header value, if any.
        empty_body: answer an error with no body (aioapns would wait forever on it).
        hang: never answer.
        delay_s: wait this long before answering.
    """

    status: int = 200
    code: str | None = None
    retry_after: str | None = None
    empty_body: bool = False
    hang: bool = False
    delay_s: float = 0.0


@dataclass
class Received:
    token: str
    headers: dict[str, str]
    payload: dict[str, Any]
    status: int


@dataclass
class Recorder:
    """Thread-safe script and record."""

    default: Reply = field(default_factory=Reply)
    _scripts: dict[str, deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    received: list[Received] = field(default_factory=list)
    answers_lost: list[str] = field(default_factory=list)
    """Tokens whose request arrived but whose answer could not reach the client (it went away)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def script(self, token: str, *replies: Reply) -> None:
        """Answer the next requests for ``token`` with ``replies``, in order, then with the default."""
        with self._lock:
            self._scripts[token].extend(replies)

    def next_reply(self, token: str) -> Reply:
        with self._lock:
            queue = self._scripts.get(token)
            return queue.popleft() if queue else self.default

    def record(self, item: Received) -> None:
        with self._lock:
            self.received.append(item)

    def lost(self, token: str) -> None:
        with self._lock:
            self.answers_lost.append(token)

    def for_token(self, token: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.token == token]

    def delivered(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.status == 200]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost (also its own CA): ``(cert, key)`` PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mqchat push stand-in")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "standin-cert.pem", directory / "standin-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def apns_signing_key(directory: Path) -> tuple[Path, str]:
    """An APNs-style ``.p8`` key (EC P-256, PKCS#8 PEM): ``(path, public key PEM)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = directory / "AuthKey_TEST.p8"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return path, public


def fcm_service_account(directory: Path, token_uri: str, project_id: str) -> tuple[Path, str]:
    """A Google service account JSON whose ``token_uri`` is the stand-in: ``(path, public key PEM)``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    doc = {"type": "service_account", "project_id": project_id, "private_key_id": "standin-key",
           "private_key": private, "client_email": f"push@{project_id}.iam.gserviceaccount.com",
           "client_id": "1", "token_uri": token_uri}
    path = directory / "fcm-service-account.json"
    path.write_text(json.dumps(doc))
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return path, public
