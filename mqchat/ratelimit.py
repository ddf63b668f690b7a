"""Rate limits as pure policy: rules like ``30/1m`` and the GCRA decision behind them.

The generic cell rate algorithm (GCRA) keeps one number per subject, the *theoretical arrival
time* (TAT): when the subject's allowance would be used up if requests came at the steady rate.
A rule ``N/period`` lets ``N`` requests through at once and then one every ``period / N``:

```
 interval = period / N
 tat      = max(stored TAT, now)
 allow    <=> tat + interval - period <= now          (retry after that time - now)
 allowed  => TAT := tat + interval, kept for (TAT - now)
```

The same arithmetic runs atomically in Redis (``mqchat/storage/lua/rate_limit.lua``) so that a
limit holds across every API instance; :func:`gcra` here is its reference, used by the memory
limiter and by the property tests that the two agree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Protocol

_RULE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*(s|m|h)\s*$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000}


@dataclass(frozen=True)
class Rule:
    """``limit`` requests per ``period_ms``, all of them usable at once."""

    limit: int
    period_ms: int

    def __post_init__(self) -> None:
        if self.limit < 1 or self.period_ms < 1:
            raise ValueError("a rate limit needs limit >= 1 and a positive period")

    @property
    def interval_ms(self) -> float:
        return self.period_ms / self.limit

    @classmethod
    def parse(cls, text: str) -> Rule:
        """``"30/1m"``, ``"10/10m"``, ``"5/s"``, ``"100/1h"`` → a rule.

        Raises:
            ValueError: anything else.
        """
        match = _RULE.match(text)
        if match is None:
            raise ValueError(f"rate limit {text!r}: expected N/period such as 30/1m, 10/10m, 5/s or 100/1h")
        count, amount, unit = int(match[1]), int(match[2] or 1), match[3]
        return cls(count, amount * _UNIT_MS[unit])

    def __str__(self) -> str:
        return f"{self.limit} per {self.period_ms / 1000:g} s"


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_ms: int
    """0 when allowed; otherwise how long until one request would be."""

    @property
    def retry_after_s(self) -> int:
        """Whole seconds for a ``Retry-After`` header (at least 1)."""
        return max(1, -(-self.retry_after_ms // 1000))


def gcra(tat_ms: float | None, now_ms: float, rule: Rule, *, cost: int = 1) -> tuple[Decision, float | None]:
    """One decision: ``(decision, TAT to keep)``; the TAT is returned unchanged when nothing is used.

    ``cost=0`` only asks whether one request would pass (nothing is used up); ``cost=k`` uses
    ``k`` requests' worth at once.
    """
    tat = now_ms if tat_ms is None else max(tat_ms, now_ms)
    new_tat = tat + max(cost, 1) * rule.interval_ms
    allow_at = new_tat - rule.period_ms
    if allow_at > now_ms:
        return Decision(False, math.ceil(allow_at - now_ms)), tat_ms
    if cost == 0:
        return Decision(True, 0), tat_ms
    return Decision(True, 0), new_tat


class RateLimiter(Protocol):
    """Limits shared by every API instance (Redis) or one process (memory)."""

    async def hit(self, bucket: str, subject: str, rule: Rule, *, cost: int = 1) -> Decision:
        """Use ``cost`` requests of ``subject``'s allowance in ``bucket`` (``"login-ip"``, ...) under
        ``rule`` (``cost=0``: only ask)."""
        ...


class Clock(Protocol):
    def __call__(self) -> float: ...


class MemoryRateLimiter:
    """:class:`RateLimiter` in one process (tests, and a single API without Redis)."""

    def __init__(self, clock_ms: Clock) -> None:
        self._tat: dict[str, float] = {}
        self._clock = clock_ms

    async def hit(self, bucket: str, subject: str, rule: Rule, *, cost: int = 1) -> Decision:
        key, now = f"{bucket}:{subject}", self._clock()
        decision, tat = gcra(self._tat.get(key), now, rule, cost=cost)
        if tat is not None and tat > now:
            self._tat[key] = tat
        else:
            self._tat.pop(key, None)
        return decision


_check: type[RateLimiter] = MemoryRateLimiter
