"""Access decisions with membership resolved: the one flow every broker integration uses.

:func:`mqchat.policy.authorize` answers from the principal and the topic alone; :func:`check` resolves
its conditions against a :class:`MembershipSource`. The amqtt plugins and the HTTP auth hooks for
external brokers (EMQX, VerneMQ) both call :func:`check`, so every broker enforces the same rules.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol

from mqchat import policy
from mqchat.auth import Principal


class ChannelIndex(Protocol):
    """The one directory query access checks need."""

    async def channel_ids_of(self, user_id: str) -> frozenset[str]: ...


class MembershipSource(Protocol):
    async def channels(self, user_id: str) -> frozenset[str]: ...

    async def shares_channel(self, a: str, b: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


async def check(principal: Principal, action: policy.Action, topic: str, membership: MembershipSource) -> Decision:
    """Whether ``principal`` may do ``action`` on ``topic``, membership included."""
    verdict = policy.authorize(principal, action, topic)
    if verdict.kind == "allow":
        return Decision(True)
    if verdict.kind == "deny":
        return Decision(False, verdict.reason)
    channels = await membership.channels(principal.user_id)
    shares = None
    if verdict.kind == "if_contact" and verdict.user is not None:
        shares = await membership.shares_channel(principal.user_id, verdict.user)
    allowed = policy.resolve(verdict, channels=channels, shares_channel=shares)
    return Decision(allowed, "" if allowed else "not a member")


class MembershipCache:
    """A :class:`MembershipSource` over a directory: each user's channel set cached for
    ``ttl_s`` and loaded once however many checks wait for it. Membership changes take effect
    within ``ttl_s``."""

    def __init__(self, directory: ChannelIndex, ttl_s: float, *, max_entries: int = 100_000) -> None:
        self._directory = directory
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, frozenset[str]]] = {}
        self._loading: dict[str, asyncio.Future[frozenset[str]]] = {}

    async def channels(self, user_id: str) -> frozenset[str]:
        now = time.monotonic()
        hit = self._entries.get(user_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        pending = self._loading.get(user_id)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[frozenset[str]] = asyncio.get_running_loop().create_future()
        self._loading[user_id] = fut
        try:
            value = await self._directory.channel_ids_of(user_id)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._loading[user_id]
        fut.set_result(value)
        self._entries[user_id] = (now + self._ttl_s, value)
        if len(self._entries) > self._max_entries:
            self._entries = {u: e for u, e in self._entries.items() if e[0] > now}
        return value

    async def shares_channel(self, a: str, b: str) -> bool:
        return bool((await self.channels(a)) & (await self.channels(b)))
