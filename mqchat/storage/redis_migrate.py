"""From the single-Redis key layout to the cluster-safe one (``mqchat migrate-redis``; ``docs/redis.md``).

The cluster-safe layout (:mod:`mqchat.storage.keys`) renamed the keys that multi-key scripts and
transactions touch together, so that they share a hash tag. On a Redis written by an earlier mqchat:

=================================  ==================================  =================================
earlier key                        now                                 migration
=================================  ==================================  =================================
``read:<user>``                    ``read:{<user>}``                   renamed (read markers are user state)
``mentions:<user>:<channel>``      ``mentions:{<user>}:<channel>``     renamed (TTL kept)
``push:jobs``, ``push:sends``,     ``push:{queues}:jobs``, ...         renamed (streams keep their consumer
``push:retry``, ``push:dlq``                                           groups and pending entries)
``push:fanout:<job>``              ``push:{queues}:fanout:<job>``      renamed (TTL kept)
``presence:leases``,               ``presence:{p<s>}:...``             deleted with the online sets:
``presence:changes``,                                                  presence is rebuilt as clients
``presence:conns:*``,                                                  reconnect
``presence:user:*``
=================================  ==================================  =================================

Every other key kept its name. The migration runs with every mqchat process stopped, on the single
Redis the data is in (``RENAME`` needs both names in one slot, which a cluster does not give); it is
idempotent: a second run finds nothing to do. A key whose new name already exists (the new version
ran first) is left alone and reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from mqchat.errors import ConfigError
from mqchat.storage.redis_client import RedisClient, storage_error

#: Fixed keys renamed: earlier name → new name (both without the prefix).
FIXED_RENAMES = {f"push:{name}": f"push:{{queues}}:{name}" for name in ("jobs", "sends", "retry", "dlq")}
#: Earlier presence keys (without the prefix): patterns ending in ``*`` are scanned.
OLD_PRESENCE = ("presence:leases", "presence:changes", "presence:conns:*", "presence:user:*")
SCAN_COUNT = 1000


@dataclass
class LayoutMigration:
    """What :func:`migrate_key_layout` did."""

    renamed: int = 0
    deleted: int = 0
    conflicts: list[str] = field(default_factory=list)
    """Earlier keys left in place because their new name already existed."""


def _glob(text: str) -> str:
    """``text`` escaped for a ``SCAN MATCH`` pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def new_name(prefix: str, key: str) -> str | None:
    """The cluster-safe name of an earlier key (both with ``prefix``), or None if ``key`` is not one
    of the renamed earlier keys (already new, or never renamed)."""
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix):]
    if rest in FIXED_RENAMES:
        return prefix + FIXED_RENAMES[rest]
    kind, _, tail = rest.partition(":")
    if not tail or tail.startswith("{"):
        return None
    if kind == "read" and ":" not in tail:
        return f"{prefix}read:{{{tail}}}"
    if kind == "mentions" and tail.count(":") == 1:
        user, channel = tail.split(":")
        return f"{prefix}mentions:{{{user}}}:{channel}"
    if kind == "push" and tail.startswith("fanout:"):
        return f"{prefix}push:{{queues}}:{tail}"
    return None


async def _scan(redis: RedisClient, pattern: str) -> list[str]:
    """Every key of ``redis``'s prefix matching ``pattern`` (after the prefix)."""
    try:
        return [raw.decode() if isinstance(raw, bytes) else raw async for raw in
                redis.driver.scan_iter(match=_glob(redis.keys.prefix) + pattern, count=SCAN_COUNT)]
    except RedisError as exc:
        raise storage_error(exc) from exc


async def migrate_key_layout(redis: RedisClient) -> LayoutMigration:
    """Rename the earlier keys of ``redis``'s prefix and delete its earlier presence keys.

    Raises:
        ConfigError: ``redis`` is a cluster (migrate the single Redis first, then move the data).
        StorageUnavailable: Redis cannot be reached.
    """
    if redis.cluster:
        raise ConfigError("migrate-redis runs on the single Redis holding the earlier layout; move the data "
                          "into the cluster afterwards (docs/redis.md)")
    r, prefix, done = redis.driver, redis.keys.prefix, LayoutMigration()
    candidates: list[str] = [prefix + k for k in FIXED_RENAMES]
    for pattern in ("read:*", "mentions:*", "push:fanout:*"):
        candidates += await _scan(redis, pattern)
    for key in candidates:
        target = new_name(prefix, key)
        if target is None or not await redis.call(r.exists(key)):
            continue
        if await redis.call(r.renamenx(key, target)):
            done.renamed += 1
        else:
            done.conflicts.append(key)

    old_presence: list[str] = []
    for pattern in OLD_PRESENCE:
        if pattern.endswith("*"):
            old_presence += await _scan(redis, pattern)
        elif await redis.call(r.exists(prefix + pattern)):
            old_presence.append(prefix + pattern)
    if old_presence:
        # The online sets were kept by the earlier publisher: stale now that presence starts over.
        old_presence += await _scan(redis, "presence:online:*")
        for start in range(0, len(old_presence), 500):
            done.deleted += int(await redis.call(r.delete(*old_presence[start:start + 500])))
    return done
