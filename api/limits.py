"""HTTP rate limits: the configured rules, charged against a shared limiter (docs/security.md)."""

from __future__ import annotations

import logging
import time

from fastapi import Request

from api.errors import ApiError
from mqchat.config import RateLimitSettings
from mqchat.errors import StorageUnavailable
from mqchat.ratelimit import MemoryRateLimiter, RateLimiter, Rule

logger = logging.getLogger(__name__)


def client_address(request: Request) -> str:
    """The client's address (behind ``http.trusted_proxies``, uvicorn has already put the
    ``X-Forwarded-For`` client here)."""
    return request.client.host if request.client else "unknown"


class Limits:
    """The API's rate limits: one bucket per rule, subjects counted in ``limiter``.

    When the limiter's store is unreachable a request is let through (and logged): rate limits
    protect against abuse, and refusing every login while Redis restarts would be an outage.
    """

    def __init__(self, settings: RateLimitSettings, limiter: RateLimiter | None = None) -> None:
        self.enabled = settings.enabled
        self.limiter = limiter or MemoryRateLimiter(lambda: time.monotonic() * 1000)
        self.rules = {
            "login-ip": Rule.parse(settings.login_per_ip),
            "login-account": Rule.parse(settings.login_failures_per_account),
            "signup-ip": Rule.parse(settings.signup_per_ip),
            "search-user": Rule.parse(settings.search_per_user),
            "refresh-ip": Rule.parse(settings.refresh_per_ip),
            "uploads-user": Rule.parse(settings.uploads_per_user),
            "uploads-ip": Rule.parse(settings.uploads_per_ip),
        }

    async def charge(self, bucket: str, subject: str, *, cost: int = 1) -> None:
        """Use ``cost`` of ``subject``'s allowance in ``bucket`` (``cost=0``: only check).

        Raises:
            ApiError: 429 ``rate_limited`` with ``Retry-After``.
        """
        if not self.enabled:
            return
        rule = self.rules[bucket]
        try:
            decision = await self.limiter.hit(bucket, subject.lower(), rule, cost=cost)
        except StorageUnavailable as exc:
            logger.warning("rate limit %s not checked: %s", bucket, exc)
            return
        if not decision.allowed:
            raise ApiError(429, "rate_limited", f"too many requests ({bucket}: {rule}); retry in "
                           f"{decision.retry_after_s} s", retry_after_s=decision.retry_after_s)
