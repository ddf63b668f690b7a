"""The access invalidation feed on Redis: the stream ``acl:invalidations`` (docs/permissions.md).

The process that changes the directory publishes the change's events (:meth:`publish`, a
directory listener); every process that caches access decisions reads the stream from its tail
(:meth:`tail`, :meth:`read`) with :func:`mqchat.access.follow_invalidations`. A stream rather than
pub/sub so a reader sees the entries in order and can tell it has been away: after any read error
it starts again from the tail and drops everything it cached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio.client import Pipeline

from mqchat.errors import StorageUnavailable
from mqchat.invalidation import Invalidation
from mqchat.storage.keys import INVALIDATIONS_MAXLEN
from mqchat.storage.redis_client import RedisClient

#: Entries one read returns at most.
READ_COUNT = 1000
#: Tries of one publish before it fails (0.1 s, then 0.2 s apart).
PUBLISH_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One stream entry: its id and its event (``None``: an entry this version does not understand)."""

    entry_id: str
    event: Invalidation | None


class InvalidationFeed:
    """A view over the process's :class:`RedisClient` (never closes it)."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    async def publish(self, events: Sequence[Invalidation]) -> None:
        """Append ``events`` in one round trip, tried :data:`PUBLISH_ATTEMPTS` times (the change is
        committed: its invalidation should not be lost to a blip).

        Raises:
            StorageUnavailable: Redis cannot be reached.
        """
        key = self._redis.keys.acl_invalidations

        def build(pipe: Pipeline) -> None:
            for event in events:
                entry: dict[Any, Any] = event.fields()
                pipe.xadd(key, entry, maxlen=INVALIDATIONS_MAXLEN, approximate=True)

        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                await self._redis.pipelined(build)
                return
            except StorageUnavailable:
                if attempt == PUBLISH_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.1 * 2**attempt)

    async def tail(self) -> str:
        """The id to read after: the stream's last entry now (``0-0`` when empty)."""
        last = await self._redis.call(self._redis.driver.xrevrange(self._redis.keys.acl_invalidations, count=1))
        return _text(last[0][0]) if last else "0-0"

    async def read(self, after: str, *, block_ms: int) -> list[FeedEntry]:
        """Entries after ``after``, waiting up to ``block_ms`` for the first.

        Raises:
            StorageUnavailable: Redis cannot be reached.
        """
        reply = await self._redis.call(self._redis.driver.xread({self._redis.keys.acl_invalidations: after},
                                                                 count=READ_COUNT, block=block_ms))
        out: list[FeedEntry] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                event = Invalidation.from_fields({_text(k): _text(v) for k, v in fields.items()})
                out.append(FeedEntry(_text(entry_id), event))
        return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
