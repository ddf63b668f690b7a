"""JWT issue and verification, and the identity rule for MQTT connections.

Tokens carry ``sub`` (user id), ``dev`` (device id), ``role`` (``device`` or ``service``), ``aud``,
``iss``, ``iat``, ``nbf`` and ``exp``. Dev deployments sign with HS256; an external issuer signs with
RS256 or ES256 and mqchat only verifies with its public key.

Verification is pure: the caller passes ``now`` (seconds since the epoch), so expiry and
not-before are checked against a clock the tests control. pyjwt checks the signature, audience and
issuer; time claims are checked here with the configured leeway.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import jwt

from mqchat.config import AuthSettings, Settings
from mqchat.errors import AuthError, ConfigError, InvalidId
from mqchat.ids import check_id

Role = Literal["device", "service"]
SECRET_FILE = "jwt-secret"
#: Every service principal's user id starts with this; device tokens for such ids are refused.
SERVICE_PREFIX = "svc-"
#: The services a service token may be scoped to (claim ``svc``); see :mod:`mqchat.policy`.
SERVICES = ("bridge", "api", "workers")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is on the other end of a connection or request."""

    user_id: str
    device_id: str
    role: Role
    expires_at: int
    issued_at: float = 0.0
    """``iat``: a revocation ("tokens of this device issued before T") compares against it."""
    service: str | None = None
    """``svc``: the one service (:data:`SERVICES`) a service token is scoped to (its topics only,
    :mod:`mqchat.policy`); None on device tokens, and on unscoped service tokens (deprecated)."""

    @property
    def client_id(self) -> str:
        """The only MQTT client id this principal may connect with."""
        return client_id(self.user_id, self.device_id)

    @property
    def is_service(self) -> bool:
        return self.role == "service"


INSTANCE_SEP = "~"
"""A service may connect as ``{user}:{device}~{instance}``, so instances sharing one token differ."""


def client_id(user_id: str, device_id: str) -> str:
    return f"{user_id}:{device_id}"


@dataclass(frozen=True, slots=True)
class KeySet:
    """Keys resolved from :class:`AuthSettings`: what signs (maybe nothing) and what verifies."""

    signing_key: str | None
    verify_key: str
    algorithms: tuple[str, ...]
    audience: str
    issuer: str
    ttl_s: int
    leeway_s: int

    @property
    def can_issue(self) -> bool:
        return self.signing_key is not None


def load_keys(settings: Settings, *, create: bool = False) -> KeySet:
    """Resolve the keys: configured secret, external public key, or the dev secret file.

    Args:
        settings: the process settings.
        create: make ``<data_dir>/jwt-secret`` when no key is configured and the file is missing.

    Raises:
        ConfigError: no usable key.
    """
    auth: AuthSettings = settings.auth
    if auth.public_key_file is not None:
        try:
            public = auth.public_key_file.read_text()
        except OSError as exc:
            raise ConfigError(f"auth.public_key_file: cannot read {auth.public_key_file}: {exc}") from None
        return KeySet(None, public, auth.algorithms, auth.audience, auth.issuer, auth.token_ttl_s, auth.leeway_s)
    if auth.secret is not None:
        secret = auth.secret.get_secret_value()
    else:
        secret = _dev_secret(settings.data_dir / SECRET_FILE, create=create)
    return KeySet(secret, secret, ("HS256",), auth.audience, auth.issuer, auth.token_ttl_s, auth.leeway_s)


def _dev_secret(path: Path, *, create: bool) -> str:
    if path.is_file():
        return path.read_text().strip()
    if not create:
        raise ConfigError(
            f"no JWT key: set MQCHAT_AUTH__SECRET, or auth.public_key_file, or create {path} "
            "(`mqchat up` does so on first start)"
        )
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    # Created 0600 in one step (never readable by others, not even briefly); O_EXCL fails if another
    # process won the race.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(secret + "\n")
    return secret


def issue(keys: KeySet, *, user_id: str, device_id: str, now: int, role: Role = "device",
          ttl_s: int | None = None, issued_at: float | None = None, service: str | None = None) -> str:
    """Sign a token for ``user_id`` on ``device_id``.

    ``issued_at`` (default ``now``) may carry milliseconds, so a token issued just after a
    revocation is told apart from one issued just before it. ``service`` (role ``service`` only)
    scopes the token to one of :data:`SERVICES`.

    Raises:
        ConfigError: this deployment only verifies tokens (external issuer).
        InvalidId: an id does not follow the id grammar.
    """
    if keys.signing_key is None:
        raise ConfigError("this deployment verifies tokens from an external issuer; it cannot issue them")
    claims: dict[str, Any] = {
        "sub": check_id("user", user_id),
        "dev": check_id("device", device_id),
        "role": role,
        "aud": keys.audience,
        "iss": keys.issuer,
        "iat": round(issued_at, 3) if issued_at is not None else now,
        "nbf": now,
        "exp": now + (ttl_s if ttl_s is not None else keys.ttl_s),
    }
    if service is not None:
        if role != "service" or service not in SERVICES:
            raise ConfigError(f"service scope {service!r}: only service tokens, one of {SERVICES}")
        claims["svc"] = service
    return jwt.encode(claims, keys.signing_key, algorithm="HS256")


def verify(keys: KeySet, token: str, *, now: int) -> Principal:
    """Check a token's signature, audience, issuer and time claims.

    Raises:
        AuthError: ``reason`` is one of ``malformed``, ``bad_signature``, ``bad_audience``,
            ``bad_issuer``, ``expired``, ``not_yet_valid``, ``bad_claims``.
    """
    if not token or len(token) > 8192:
        raise AuthError("malformed", "missing or oversized token")
    try:
        claims = jwt.decode(
            token,
            keys.verify_key,
            algorithms=list(keys.algorithms),
            audience=keys.audience,
            issuer=keys.issuer,
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                     "require": ["sub", "dev", "exp", "aud", "iss"]},
        )
    except jwt.InvalidAudienceError:
        raise AuthError("bad_audience", "token audience does not match") from None
    except jwt.InvalidIssuerError:
        raise AuthError("bad_issuer", "token issuer does not match") from None
    except (jwt.InvalidSignatureError, jwt.InvalidAlgorithmError):
        raise AuthError("bad_signature", "token signature or algorithm is not accepted") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError("bad_claims", str(exc)) from None
    except jwt.PyJWTError as exc:
        raise AuthError("malformed", f"token cannot be decoded: {exc}") from None

    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(exp, int) or not isinstance(nbf, int):
        raise AuthError("bad_claims", "exp and nbf must be integers")
    if now > exp + keys.leeway_s:
        raise AuthError("expired", "token has expired")
    if now + keys.leeway_s < nbf:
        raise AuthError("not_yet_valid", "token is not valid yet")
    role = claims.get("role", "device")
    if role not in ("device", "service"):
        raise AuthError("bad_claims", f"unknown role {role!r}")
    if role == "device" and str(claims["sub"]).startswith(SERVICE_PREFIX):
        # Service user ids are reserved, so a username alone tells external brokers' hooks who is a service.
        raise AuthError("bad_claims", f"user ids starting with {SERVICE_PREFIX!r} are reserved for services")
    service = claims.get("svc")
    if service is not None and (role != "service" or service not in SERVICES):
        raise AuthError("bad_claims", f"svc must be one of {SERVICES}, on service tokens only")
    iat = claims.get("iat", 0)
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        raise AuthError("bad_claims", "iat must be a number")
    try:
        return Principal(check_id("user", claims["sub"]), check_id("device", claims["dev"]), role, exp, float(iat),
                         service)
    except InvalidId as exc:
        raise AuthError("bad_claims", str(exc)) from None


def check_connect_identity(principal: Principal, *, client_id_: str | None, username: str | None) -> None:
    """The identity rule for MQTT CONNECT: username is the token's user and the client id is
    ``{user}:{device}`` from the token, so no session can be taken over across users or devices.

    Raises:
        AuthError: ``reason`` is ``identity_mismatch``.
    """
    if username != principal.user_id:
        raise AuthError("identity_mismatch", "username does not match the token's user")
    if client_id_ == principal.client_id:
        return
    if principal.is_service and client_id_ is not None and client_id_.startswith(principal.client_id + INSTANCE_SEP):
        return  # one service token shared by several instances of a process, each with its own id
    raise AuthError("identity_mismatch", "client id must be '{user_id}:{device_id}' from the token")
