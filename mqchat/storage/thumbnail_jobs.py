"""The thumbnail job stream (``objects:thumbnails``): the API enqueues one job per completed image
upload, the workers' thumbnailer reads them in a consumer group and acknowledges each when done.
A job left unacknowledged by a dead worker is taken over after ``claim_idle_ms``."""

from __future__ import annotations

from typing import Any

from mqchat.storage.keys import THUMBNAIL_GROUP, THUMBNAIL_JOBS_MAXLEN
from mqchat.storage.redis_client import RedisClient


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _jobs(entries: Any) -> list[tuple[str, str]]:
    out = []
    for entry_id, fields in entries or []:
        if fields is None:  # trimmed while pending
            continue
        decoded = {_s(k): _s(v) for k, v in fields.items()}
        if "upload" in decoded:
            out.append((_s(entry_id), decoded["upload"]))
    return out


class ThumbnailJobs:
    """A view over the process's :class:`RedisClient` (not closed here)."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self._r = redis.driver
        self._key = redis.keys.thumbnail_jobs

    async def enqueue(self, upload_id: str) -> None:
        await self._redis.call(self._r.xadd(self._key, {"upload": upload_id}, maxlen=THUMBNAIL_JOBS_MAXLEN,
                                            approximate=True))

    async def ensure_group(self) -> None:
        await self._redis.ensure_group(self._key, THUMBNAIL_GROUP)

    async def take(self, consumer: str, *, count: int, block_ms: int, claim_idle_ms: int) -> list[tuple[str, str]]:
        """Up to ``count`` ``(entry id, upload id)`` jobs: first those another consumer left idle for
        ``claim_idle_ms`` (or this one left before a restart), then new ones, waiting up to ``block_ms``."""
        reply = await self._redis.call(self._r.xautoclaim(self._key, THUMBNAIL_GROUP, consumer, claim_idle_ms,
                                                          "0-0", count=count))
        claimed = _jobs(reply[1])
        if claimed:
            return claimed
        reply = await self._redis.call(self._r.xreadgroup(THUMBNAIL_GROUP, consumer, {self._key: ">"},
                                                          count=count, block=block_ms))
        out: list[tuple[str, str]] = []
        for _stream, entries in reply or []:
            out.extend(_jobs(entries))
        return out

    async def ack(self, entry_id: str) -> None:
        await self._redis.call(self._r.xack(self._key, THUMBNAIL_GROUP, entry_id))
