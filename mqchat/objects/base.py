"""The object store protocol: opaque bytes under keys, and presigned URLs for clients.

A key is a relative, slash-separated path of ``[A-Za-z0-9._-]`` segments (no empty, ``.`` or ``..``
segment), checked by :func:`check_key` before any backend sees it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import quote

from mqchat.errors import MqchatError, StorageError

_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
MAX_KEY_CHARS = 512


class InvalidKey(MqchatError, ValueError):
    """An object key outside the key grammar (it could name a path outside the store)."""


class ObjectNotFound(StorageError):
    """No object under the key."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"no object {key!r}")


def check_key(key: str) -> str:
    """Return ``key`` when it follows the key grammar.

    Raises:
        InvalidKey: an empty, absolute, ``..`` or otherwise unusual key.
    """
    if not key or len(key) > MAX_KEY_CHARS or not all(
            _SEGMENT.fullmatch(part) and part not in (".", "..") for part in key.split("/")):
        raise InvalidKey(f"invalid object key {key!r}")
    return key


def content_disposition(filename: str) -> str:
    """``attachment`` with the name as RFC 6266 ``filename*`` (UTF-8, percent-encoded): safe in a header."""
    return f"attachment; filename*=UTF-8''{quote(filename, safe='')}"


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What ``head`` knows about a stored object."""

    key: str
    size: int
    content_type: str | None = None


@dataclass(frozen=True, slots=True)
class PresignedRequest:
    """A request a client may make without credentials until ``expires_at`` (seconds since the epoch)."""

    method: str
    url: str
    expires_at: int
    headers: dict[str, str] = field(default_factory=dict)
    """Headers the client must send as they are (they are part of the signature)."""


class ObjectStore(Protocol):
    """Where uploads live. Implementations: :class:`mqchat.objects.local.LocalObjectStore` (files
    under the data directory) and :class:`mqchat.objects.s3.S3ObjectStore` (the S3 API).

    Every method raises :class:`~mqchat.objects.base.InvalidKey` for a key outside the grammar and
    :class:`~mqchat.errors.StorageError` when the backend fails.
    """

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key``, replacing any object there."""
        ...

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        """The object's bytes; with ``max_bytes``, at most its first ``max_bytes`` bytes.

        Raises:
            ObjectNotFound: nothing under ``key``.
        """
        ...

    async def head(self, key: str) -> ObjectInfo | None:
        """The object's size and stored content type, or None when there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; removing a missing object is not an error."""
        ...

    async def move(self, src: str, dst: str) -> None:
        """Put the object of ``src`` under ``dst`` (replacing any) and remove ``src``.

        Raises:
            ObjectNotFound: nothing under ``src``.
        """
        ...

    def presign_upload(self, key: str, *, content_type: str, size: int, expires_at: int) -> PresignedRequest:
        """A request that stores one object of ``content_type`` under ``key`` (at most ``size`` bytes where
        the backend can enforce it; the server verifies the stored size afterwards in any case)."""
        ...

    def presign_download(self, key: str, *, expires_at: int, filename: str | None = None) -> str:
        """A URL that ``GET`` s the object until ``expires_at``; ``filename`` is offered to browsers."""
        ...

    async def close(self) -> None: ...
