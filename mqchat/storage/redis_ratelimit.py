"""Rate limits in Redis, shared by every API instance (the GCRA of :mod:`mqchat.ratelimit`, in Lua)."""

from __future__ import annotations

from mqchat.ratelimit import Decision, RateLimiter, Rule
from mqchat.storage.redis_client import RedisClient


class RedisRateLimiter:
    """:class:`~mqchat.ratelimit.RateLimiter` on Redis: one key and one script call per decision
    (``rate_limit.lua``); a view over the process's :class:`RedisClient`, which it never closes."""

    def __init__(self, redis: RedisClient) -> None:
        self._redis = redis

    async def hit(self, bucket: str, subject: str, rule: Rule, *, cost: int = 1) -> Decision:
        """Use ``cost`` of ``subject``'s allowance in ``bucket`` under ``rule`` (``cost=0``: only ask).

        Raises:
            StorageUnavailable: Redis cannot be reached (callers decide whether to fail open).
        """
        allowed, retry_ms = await self._redis.run_script(
            "rate_limit.lua", [self._redis.keys.rate(bucket, subject)], [rule.period_ms, rule.limit, cost])
        return Decision(bool(allowed), int(retry_ms))


_check: type[RateLimiter] = RedisRateLimiter
