"""Rate limits in Redis, shared by every API instance (the GCRA of :mod:`mqchat.ratelimit`, in Lua)."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mqchat.errors import StorageUnavailable
from mqchat.ratelimit import Decision, RateLimiter, Rule
from mqchat.storage.keys import DEFAULT_PREFIX, Keys
from mqchat.storage.redis_state import load_script


class RedisRateLimiter:
    """:class:`~mqchat.ratelimit.RateLimiter` on Redis: one key and one script call per decision."""

    def __init__(self, client: aioredis.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self._keys = Keys(prefix)
        self._script = client.register_script(load_script("rate_limit.lua"))

    async def hit(self, bucket: str, subject: str, rule: Rule, *, cost: int = 1) -> Decision:
        """Use ``cost`` of ``subject``'s allowance in ``bucket`` under ``rule`` (``cost=0``: only ask).

        Raises:
            StorageUnavailable: Redis cannot be reached (callers decide whether to fail open).
        """
        try:
            allowed, retry_ms = await self._script(keys=[self._keys.rate(bucket, subject)],
                                                   args=[rule.period_ms, rule.limit, cost])
        except RedisError as exc:
            raise StorageUnavailable(f"rate limit: {exc}") from exc
        return Decision(bool(allowed), int(retry_ms))


_check: type[RateLimiter] = RedisRateLimiter
