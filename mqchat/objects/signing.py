"""HMAC-signed, expiring URLs for the ``local`` object backend (pure: the caller passes ``now``).

A URL names an operation (``get`` or ``put``), an object key, an expiry and, for ``put``, the
content type and the most bytes it may store; all of them are covered by an HMAC-SHA256 signature
with a key derived from the deployment secret, so changing any of them (or the key) invalidates
it. Verification compares signatures in constant time and checks the signature before the expiry,
so a forged URL is ``url_invalid`` whatever expiry it claims.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlencode

from mqchat.objects.base import check_key

Op = Literal["get", "put"]
#: Domain separation: this key signs object URLs and nothing else, even though it comes from the
#: same deployment secret as the JWT key.
KEY_CONTEXT = b"mqchat/objects/url-signing/v1"
#: Where the API serves the local backend's objects.
OBJECTS_PATH = "/v1/objects"


class UrlRefused(Exception):
    """A signed URL that does not grant what it is used for. ``code``: ``url_invalid`` or ``url_expired``."""

    def __init__(self, code: Literal["url_invalid", "url_expired"], message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a verified URL allows."""

    op: Op
    key: str
    expires_at: int
    content_type: str = ""
    max_bytes: int = 0
    filename: str = ""


def derive_key(secret: str | bytes) -> bytes:
    """The URL signing key for a deployment secret (HMAC-SHA256 of a fixed context under the secret)."""
    raw = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(raw, KEY_CONTEXT, hashlib.sha256).digest()


class UrlSigner:
    """Signs and verifies object URLs with one key.

    Args:
        key: from :func:`derive_key`.
        base_url: put in front of :data:`OBJECTS_PATH` (``https://chat.example.com``); empty: URLs
            are paths, resolved by clients against the API's base URL.
    """

    def __init__(self, key: bytes, base_url: str = "") -> None:
        if len(key) < 32:
            raise ValueError("the URL signing key must be at least 32 bytes")
        self._key = key
        self._base = base_url.rstrip("/")

    def _sign(self, grant: Grant) -> str:
        text = "\n".join([grant.op, grant.key, str(grant.expires_at), grant.content_type, str(grant.max_bytes),
                          grant.filename])
        digest = hmac.new(self._key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def url(self, grant: Grant) -> str:
        """The signed URL for ``grant``."""
        check_key(grant.key)
        query: dict[str, str | int] = {"op": grant.op, "exp": grant.expires_at}
        if grant.op == "put":
            query |= {"ct": grant.content_type, "n": grant.max_bytes}
        if grant.filename:
            query["fn"] = grant.filename
        query["sig"] = self._sign(grant)
        return f"{self._base}{OBJECTS_PATH}/{grant.key}?{urlencode(query)}"

    def verify(self, op: Op, key: str, query: dict[str, str], *, now: int) -> Grant:
        """The grant of a URL's path ``key`` and ``query`` for operation ``op``, at time ``now`` (seconds).

        Raises:
            UrlRefused: ``url_invalid`` (missing or wrong signature, other operation, malformed) or
                ``url_expired`` (genuine, but past its expiry).
        """
        try:
            check_key(key)
            if query.get("op") != op:
                raise ValueError("operation")
            grant = Grant(op=op, key=key, expires_at=int(query["exp"]), content_type=query.get("ct", ""),
                          max_bytes=int(query.get("n", "0")), filename=query.get("fn", ""))
            given = query["sig"]
        except (KeyError, ValueError):
            raise UrlRefused("url_invalid", "the URL is not a valid signed object URL") from None
        if not hmac.compare_digest(given.encode(), self._sign(grant).encode()):
            raise UrlRefused("url_invalid", "the URL's signature does not match")
        if now >= grant.expires_at:
            raise UrlRefused("url_expired", "the URL has expired; ask for a new one")
        return grant
