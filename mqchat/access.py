"""Access decisions with membership resolved: the one flow every broker integration uses.

:func:`mqchat.policy.authorize` answers from the principal and the topic alone; :func:`check` resolves
its conditions against a :class:`MembershipSource`. The amqtt plugins and the HTTP auth hooks for
external brokers (EMQX, VerneMQ) both call :func:`check`, so every broker enforces the same rules.

Decided once, invalidated by events (docs/permissions.md, *Caching and invalidation*)::

    topic ──Verdicts (per principal: each topic parsed and judged once; pure, never stale)──▶ verdict
    verdict "if member of c" ──MembershipCache (per user: channels and servers)──▶ c in channels
                                      ▲
    directory change ──▶ acl:invalidations (Redis) ──follow_invalidations──┘ drops what changed

While the feed is followed, a user's entry lives ``fed_ttl_s`` (a safety net); without it (no Redis,
or the feed lost) ``ttl_s``, short, and every entry is dropped when the feed is lost and again when
it is back, so no change is missed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mqchat import policy
from mqchat.auth import Principal
from mqchat.invalidation import Invalidation
from mqchat.storage.base import AccessScope

logger = logging.getLogger(__name__)

#: A refused SUBSCRIBE or PUBLISH re-reads the directory if the cached answer is older than this
#: (seconds), in case a grant's event has not arrived yet; at most once per this time per user.
RECHECK_REFUSED_S = 1.0


class ChannelIndex(Protocol):
    """The one directory query access checks need (a directory with servers also has
    ``access_scope``, which :class:`MembershipCache` prefers)."""

    async def channel_ids_of(self, user_id: str) -> frozenset[str]: ...


class MembershipSource(Protocol):
    async def channels(self, user_id: str, *, max_age_s: float | None = None) -> frozenset[str]: ...

    async def shares_channel(self, a: str, b: str, *, max_age_s: float | None = None) -> bool: ...


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


class Verdicts:
    """:func:`mqchat.policy.authorize` for one principal, each ``(action, topic)`` parsed and judged once.

    A verdict depends on the principal and the topic only, so it never goes stale; what depends on
    membership stays a condition (``if_member``) resolved on each use. Bounded: past ``max_topics``
    per action, the memo starts again.
    """

    __slots__ = ("_max", "_memo", "principal")

    def __init__(self, principal: Principal, *, max_topics: int = 1024) -> None:
        self.principal = principal
        self._max = max_topics
        self._memo: dict[policy.Action, dict[str, policy.Verdict]] = {a: {} for a in policy.Action}

    def verdict(self, action: policy.Action, topic: str) -> policy.Verdict:
        memo = self._memo[action]
        found = memo.get(topic)
        if found is None:
            found = policy.authorize(self.principal, action, topic)
            if len(memo) >= self._max:
                memo.clear()
            memo[topic] = found
        return found


def decide_cached(verdicts: Verdicts, action: policy.Action, topic: str, cache: MembershipCache) -> bool | None:
    """The decision when it needs no waiting (the per-delivery path: two dict lookups and a set test):
    the verdict memoized, the user's channels cached and fresh. ``None``: ask :func:`check`, which
    loads what is missing (and re-reads a refusal of SUBSCRIBE or PUBLISH, see :data:`RECHECK_REFUSED_S`)."""
    verdict = verdicts.verdict(action, topic)
    kind = verdict.kind
    if kind == "allow":
        return True
    if kind == "deny":
        return False
    if kind == "if_member":
        channels = cache.fresh(verdicts.principal.user_id)
        if channels is not None:
            if verdict.channel in channels:
                return True
            if action is policy.Action.RECEIVE:
                return False
    elif kind == "if_contact" and verdict.user is not None:
        mine, theirs = cache.fresh(verdicts.principal.user_id), cache.fresh(verdict.user)
        if mine is not None and theirs is not None:
            if not mine.isdisjoint(theirs):
                return True
            if action is policy.Action.RECEIVE:
                return False
    return None


async def check(principal: Principal, action: policy.Action, topic: str, membership: MembershipSource, *,
                verdicts: Verdicts | None = None) -> Decision:
    """Whether ``principal`` may do ``action`` on ``topic``, membership included.

    Args:
        verdicts: the principal's memo of verdicts (the topic is then parsed once per principal).
    """
    verdict = verdicts.verdict(action, topic) if verdicts is not None else policy.authorize(principal, action, topic)
    if verdict.kind == "allow":
        return Decision(True)
    if verdict.kind == "deny":
        return Decision(False, verdict.reason)
    allowed = await _resolve(principal.user_id, verdict, membership, None)
    if not allowed and action is not policy.Action.RECEIVE:
        # A grant's invalidation may still be on its way: a refusal trusts only a recent answer.
        allowed = await _resolve(principal.user_id, verdict, membership, RECHECK_REFUSED_S)
    return Decision(allowed, "" if allowed else "not a member")


async def _resolve(user_id: str, verdict: policy.Verdict, membership: MembershipSource,
                   max_age_s: float | None) -> bool:
    if verdict.kind == "if_contact" and verdict.user is not None:
        return await membership.shares_channel(user_id, verdict.user, max_age_s=max_age_s)
    channels = await membership.channels(user_id, max_age_s=max_age_s)
    return policy.resolve(verdict, channels=channels)


class _Entry:
    __slots__ = ("channels", "expires", "loaded", "refresh_at", "servers")

    def __init__(self, channels: frozenset[str], servers: frozenset[str] | None, loaded: float,
                 expires: float) -> None:
        self.channels = channels
        self.servers = servers  # None: unknown (a directory without servers): any server change drops it
        self.loaded = loaded
        self.expires = expires
        # read again in the background once used past here (60-85 % of its lifetime, spread so that
        # entries loaded together are not all reloaded together)
        self.refresh_at = loaded + (expires - loaded) * random.uniform(REFRESH_AHEAD_MIN, REFRESH_AHEAD_MAX)


#: An entry used past this fraction of its lifetime (picked at random in the range per entry) is
#: read again in the background: the per-delivery path keeps finding fresh entries instead of
#: waiting for a directory read when one expires (and a channel's members, loaded together, are
#: not all reloaded in the same second).
REFRESH_AHEAD_MIN, REFRESH_AHEAD_MAX = 0.6, 0.85


class MembershipCache:
    """A :class:`MembershipSource` over a directory: each user's channels (and servers) cached and
    loaded once however many checks wait for it.

    Args:
        directory: ``access_scope`` is used when it has one, else ``channel_ids_of``.
        ttl_s: how long an entry is trusted without the invalidation feed.
        fed_ttl_s: how long while the feed is followed (:meth:`set_fed`); default ``ttl_s``.
        max_entries: past it, expired entries are swept, then the oldest down to 90% of it.
    """

    def __init__(self, directory: ChannelIndex, ttl_s: float, *, fed_ttl_s: float | None = None,
                 max_entries: int = 100_000) -> None:
        self._directory = directory
        self._scope_of = getattr(directory, "access_scope", None)
        self._unfed_ttl_s = ttl_s
        self._fed_ttl_s = ttl_s if fed_ttl_s is None else fed_ttl_s
        self._ttl_s = ttl_s
        self._fed = False
        self._max_entries = max_entries
        self._entries: dict[str, _Entry] = {}
        self._loading: dict[str, asyncio.Future[_Entry]] = {}
        self._refreshing: set[asyncio.Task[None]] = set()
        self._version = 0  # bumped by every invalidation: a load that straddles one is not kept
        self.loads = 0
        """Directory reads so far (for metrics and benchmarks)."""

    # --- the feed ------------------------------------------------------------------------------

    @property
    def fed(self) -> bool:
        return self._fed

    @property
    def ttl_s(self) -> float:
        """The lifetime of an entry loaded now."""
        return self._ttl_s

    def set_fed(self, fed: bool) -> None:
        """The invalidation feed is followed (``True``) or lost (``False``). Either way everything is
        dropped: entries loaded while the feed was followed may have missed events since it was lost,
        and entries loaded while it was not may have missed events before it was back."""
        self._fed = fed
        self._ttl_s = self._fed_ttl_s if fed else self._unfed_ttl_s
        self.clear()

    def clear(self) -> None:
        self._version += 1
        self._entries.clear()

    def invalidate(self, event: Invalidation | None) -> int:
        """Drop what ``event`` may have changed (``None``: an event not understood, so everything).
        Returns how many entries were dropped."""
        self._version += 1
        if event is None:
            dropped = len(self._entries)
            self._entries.clear()
            return dropped
        if event.scope == "user":
            return 1 if self._entries.pop(event.id, None) is not None else 0
        server = event.id if event.scope == "server" else event.server
        channel = event.id if event.scope == "channel" else None
        gone = [u for u, e in self._entries.items()
                if e.servers is None or (server is not None and server in e.servers) or channel in e.channels]
        for u in gone:
            del self._entries[u]
        return len(gone)

    # --- reads -----------------------------------------------------------------------------------

    def fresh(self, user_id: str) -> frozenset[str] | None:
        """The user's channels if cached and not expired, without waiting (the per-delivery path).
        An entry past its refresh point is read again in the background (once)."""
        hit = self._entries.get(user_id)
        if hit is None:
            return None
        now = time.monotonic()
        if hit.expires <= now:
            return None
        if now >= hit.refresh_at:
            hit.refresh_at = hit.expires  # once per entry
            if user_id not in self._loading:
                self._refresh_ahead(user_id)
        return hit.channels

    def _refresh_ahead(self, user_id: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous caller): the entry is read again when it expires
        task = loop.create_task(self._reload(user_id), name="access.membership.refresh")
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    async def _reload(self, user_id: str) -> None:
        try:
            await self._load(user_id, time.monotonic())
        except Exception as exc:  # the entry stays until it expires; the next check reads it again
            logger.warning("refreshing the channels of %s failed: %s", user_id, exc)

    async def channels(self, user_id: str, *, max_age_s: float | None = None) -> frozenset[str]:
        """The user's channels; ``max_age_s``: an entry loaded longer ago than this is read again."""
        now = time.monotonic()
        hit = self._entries.get(user_id)
        if hit is not None and hit.expires > now and (max_age_s is None or now - hit.loaded <= max_age_s):
            return hit.channels
        return (await self._load(user_id, now)).channels

    async def _load(self, user_id: str, now: float) -> _Entry:
        pending = self._loading.get(user_id)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[_Entry] = asyncio.get_running_loop().create_future()
        self._loading[user_id] = fut
        version, ttl_s = self._version, self._ttl_s
        try:
            self.loads += 1
            if self._scope_of is not None:
                scope: AccessScope = await self._scope_of(user_id)
                entry = _Entry(scope.channels, scope.servers, now, now + ttl_s)
            else:
                entry = _Entry(await self._directory.channel_ids_of(user_id), None, now, now + ttl_s)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._loading[user_id]
        fut.set_result(entry)
        if version == self._version:  # no invalidation meanwhile: the answer may be kept
            self._entries[user_id] = entry
            if len(self._entries) > self._max_entries:
                kept = [(u, e) for u, e in self._entries.items() if e.expires > now]
                # still too many: the oldest loaded go first (a dict keeps insertion order)
                self._entries = dict(kept[max(0, len(kept) - self._max_entries * 9 // 10):])
        return entry

    async def shares_channel(self, a: str, b: str, *, max_age_s: float | None = None) -> bool:
        return bool((await self.channels(a, max_age_s=max_age_s)) & (await self.channels(b, max_age_s=max_age_s)))


# --- following the feed ----------------------------------------------------------------------------


class FeedEntry(Protocol):
    @property
    def entry_id(self) -> str: ...

    @property
    def event(self) -> Invalidation | None: ...


class InvalidationSource(Protocol):
    """What :func:`follow_invalidations` reads (:class:`mqchat.storage.invalidations.InvalidationFeed`)."""

    async def tail(self) -> str: ...

    async def read(self, after: str, *, block_ms: int) -> Sequence[FeedEntry]: ...


class Invalidatable(Protocol):
    def set_fed(self, fed: bool) -> None: ...

    def invalidate(self, event: Invalidation | None) -> int: ...


async def follow_invalidations(feed: InvalidationSource, caches: Sequence[Invalidatable], *, block_ms: int = 1000,
                               retry_s: float = 0.5, max_retry_s: float = 5.0) -> None:
    """Apply every event of ``feed`` to ``caches``, forever (cancel to stop).

    The caches are marked fed once the stream's tail is known (and cleared), and unfed (and cleared)
    on any read error; the loop then starts again from the tail, backing off from ``retry_s`` to
    ``max_retry_s``.
    """
    after: str | None = None
    delay = retry_s
    me = asyncio.current_task()
    while True:
        if me is not None and me.cancelling():
            # redis-py can swallow a cancellation that lands mid-command (seen after a Redis restart)
            raise asyncio.CancelledError
        try:
            if after is None:
                after = await feed.tail()
                for cache in caches:
                    cache.set_fed(True)
                logger.info("following access invalidations")
            for entry in await feed.read(after, block_ms=block_ms):
                after = entry.entry_id
                for cache in caches:
                    cache.invalidate(entry.event)
            delay = retry_s
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if after is not None:
                logger.warning("access invalidations lost (%s): short cache lifetime until they are back", exc)
            after = None
            for cache in caches:
                cache.set_fed(False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_retry_s)
