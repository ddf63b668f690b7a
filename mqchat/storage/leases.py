"""Leases in Redis: bridge membership and partition leases (the storage side of channel
ownership), and fenced leader leases for singleton jobs (:class:`LeaderLease`).

The policy (which bridge should own which partition, how long to trust a lease) is pure code in
:mod:`bridge.ownership`; this module only runs its commands. Keys (:mod:`mqchat.storage.keys`):
``bridge:members`` (zset: bridge id → heartbeat expiry, ms) and ``bridge:lease:{partition}`` (string:
the owner, expiring after the lease time). The claim and release scripts are
``mqchat/storage/lua/lease_claim.lua`` and ``lease_release.lua``.
"""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio.client import Pipeline

from mqchat.storage.redis_client import RedisClient

LEASE_CLAIM = "lease_claim.lua"
LEASE_RELEASE = "lease_release.lua"
LEADER_CLAIM = "leader_claim.lua"
LEADER_RELEASE = "leader_release.lua"


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ChannelLeases:
    """Heartbeats of the live bridges and the leases on channel partitions.

    Args:
        redis: the bridge's Redis (not closed here: its owner closes it).
    """

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis
        self.keys = redis.keys

    async def heartbeat(self, bridge_id: str, *, now_ms: int, lease_ms: int) -> list[str]:
        """Renew ``bridge_id``'s membership until ``now_ms + lease_ms``, drop expired members, and
        return the live bridges (sorted), in one round trip.

        Raises:
            StorageUnavailable: Redis cannot be reached.
        """
        k = self.keys

        def build(pipe: Pipeline) -> None:
            pipe.zadd(k.bridges, {bridge_id: now_ms + lease_ms})
            pipe.zremrangebyscore(k.bridges, "-inf", now_ms)
            pipe.zrange(k.bridges, 0, -1)

        _, _, members = await self._redis.pipelined(build)
        return sorted(_s(m) for m in members)

    async def claim_and_release(self, bridge_id: str, claim: Sequence[int], release: Sequence[int], *,
                                lease_ms: int) -> list[bool]:
        """Claim (or renew) the leases of ``claim`` for ``lease_ms`` and release those of ``release``
        that ``bridge_id`` still holds, in one round trip.

        Returns:
            For each partition of ``claim``, in order: whether ``bridge_id`` holds its lease now.
        """
        k = self.keys
        def build(pipe: Pipeline) -> None:
            for p in claim:
                self._redis.queue_script(pipe, LEASE_CLAIM, [k.lease(p)], [bridge_id, lease_ms])
            for p in release:
                self._redis.queue_script(pipe, LEASE_RELEASE, [k.lease(p)], [bridge_id])

        # Claims renew and releases are conditional, so a resend after a script reload is harmless.
        results = await self._redis.pipelined(build, scripts=[LEASE_CLAIM, LEASE_RELEASE])
        return [bool(ok) for ok in results[: len(claim)]]

    async def leave(self, bridge_id: str, held: Sequence[int]) -> None:
        """Release every lease of ``held`` that ``bridge_id`` still holds and leave the member set, in
        one round trip (a clean shutdown: the other bridges take over at their next tick)."""
        k = self.keys
        def build(pipe: Pipeline) -> None:
            for p in held:
                self._redis.queue_script(pipe, LEASE_RELEASE, [k.lease(p)], [bridge_id])
            pipe.zrem(k.bridges, bridge_id)

        await self._redis.pipelined(build, scripts=[LEASE_RELEASE])


class LeaderLease:
    """One leader at a time for a singleton job, with a fencing token.

    Key ``leader:{name}`` (a hash: ``owner``, ``token``, ``expires_ms``; scripts
    ``leader_claim.lua`` and ``leader_release.lua``). Expiry is judged on Redis's clock. Every new
    holder gets a token one higher than the last, so work done under an old token can be told
    apart: a holder checks, by renewing, that its token is still the current one before each step
    it must not share (see :mod:`workers.leader`).

    Args:
        redis: the process's Redis (not closed here: its owner closes it).
        name: the job (``presence``).
    """

    def __init__(self, redis: RedisClient, name: str) -> None:
        self._redis = redis
        self.key = redis.keys.leader(name)

    async def claim(self, owner: str, *, lease_ms: int) -> tuple[int, int]:
        """Claim the lease, or renew it if ``owner`` holds it, for ``lease_ms`` from now (Redis time).

        Returns:
            ``(token, expires_ms)``: ``token`` > 0 if ``owner`` holds the lease now (the same token
            as before when renewed, a new one when taken), 0 if another owner does (``expires_ms``
            is then when its lease ends unless renewed).

        Raises:
            StorageUnavailable: Redis cannot be reached.
        """
        token, expires = await self._redis.run_script(LEADER_CLAIM, [self.key], [owner, lease_ms])
        return int(token), int(expires)

    async def release(self, owner: str, token: int) -> bool:
        """End ``owner``'s lease at once if it still holds it with ``token`` (a clean shutdown)."""
        return bool(await self._redis.run_script(LEADER_RELEASE, [self.key], [owner, token]))
