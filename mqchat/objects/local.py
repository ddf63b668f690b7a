"""The ``local`` object backend: files under ``<data_dir>/<objects.local_dir>``, served by the API.

Clients reach the files only through URLs signed by :class:`~mqchat.objects.signing.UrlSigner`
(the API's ``/v1/objects/...`` routes verify them). Keys follow :func:`~mqchat.objects.base.check_key`
and the resolved path is checked to lie under the root as well, so no key reaches outside it.
Writes go to a temporary file that is renamed into place: a reader never sees half an object.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterable, Callable
from pathlib import Path
from typing import TypeVar

from mqchat.errors import StorageError
from mqchat.objects.base import InvalidKey, ObjectInfo, ObjectNotFound, PresignedRequest, check_key
from mqchat.objects.signing import Grant, UrlSigner

T = TypeVar("T")


class TooLarge(StorageError):
    """A streamed upload passed the number of bytes its URL allows."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"more than {limit} bytes")


class LocalObjectStore:
    """Objects as files under ``root``; URLs signed by ``signer``."""

    def __init__(self, root: Path, signer: UrlSigner) -> None:
        self.root = root.resolve()
        self.signer = signer

    def path(self, key: str) -> Path:
        """The file of ``key``.

        Raises:
            InvalidKey: the key is outside the grammar or resolves outside the root.
        """
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise InvalidKey(f"object key {key!r} leaves the store")
        return path

    def _temp(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        path = self.path(key)

        def write() -> None:
            tmp = self._temp(path)
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)

        await self._io(write)

    async def write_stream(self, key: str, chunks: AsyncIterable[bytes], *, limit: int) -> int:
        """Store a streamed body under ``key``; returns its size.

        Raises:
            TooLarge: the body passed ``limit`` bytes (nothing is stored).
        """
        path = self.path(key)
        tmp = await self._io(lambda: self._temp(path))
        size = 0
        try:
            with tmp.open("wb") as fh:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > limit:
                        raise TooLarge(limit)
                    await asyncio.to_thread(fh.write, chunk)
            await self._io(lambda: os.replace(tmp, path))
        finally:
            tmp.unlink(missing_ok=True)
        return size

    async def get(self, key: str, *, max_bytes: int | None = None) -> bytes:
        path = self.path(key)

        def read() -> bytes:
            try:
                with path.open("rb") as fh:
                    return fh.read() if max_bytes is None else fh.read(max_bytes)
            except FileNotFoundError:
                raise ObjectNotFound(key) from None

        return await self._io(read)

    async def head(self, key: str) -> ObjectInfo | None:
        path = self.path(key)

        def stat() -> ObjectInfo | None:
            try:
                return ObjectInfo(key, path.stat().st_size)
            except FileNotFoundError:
                return None

        return await self._io(stat)

    async def delete(self, key: str) -> None:
        path = self.path(key)

        def remove() -> None:
            path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # not empty, or already gone: both fine
                path.parent.rmdir()

        await self._io(remove)

    async def move(self, src: str, dst: str) -> None:
        source, target = self.path(src), self.path(dst)

        def rename() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(source, target)
            except FileNotFoundError:
                raise ObjectNotFound(src) from None

        await self._io(rename)

    def presign_upload(self, key: str, *, content_type: str, size: int, expires_at: int) -> PresignedRequest:
        url = self.signer.url(Grant("put", key, expires_at, content_type=content_type, max_bytes=size))
        return PresignedRequest("PUT", url, expires_at, {"Content-Type": content_type})

    def presign_download(self, key: str, *, expires_at: int, filename: str | None = None) -> str:
        return self.signer.url(Grant("get", key, expires_at, filename=filename or ""))

    async def close(self) -> None:
        return None

    @staticmethod
    async def _io(fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except (ObjectNotFound, InvalidKey):
            raise
        except OSError as exc:
            raise StorageError(f"object store: {exc}") from exc
