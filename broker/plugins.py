"""Native plugins (:mod:`broker.plugin_api`): JWT authentication, token lifecycle and the topic ACL.

Both are built by :func:`broker.app.native_plugins` from typed settings. The authenticated
:class:`~mqchat.auth.Principal` is kept on the session (``session.attributes``), where the ACL
plugin finds it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from prometheus_client import Counter

from broker.plugin_api import (
    LIMITS_EXEMPT,
    Action,
    AppMessage,
    Authenticator,
    BrokerStarted,
    ClientConnected,
    ClientDisconnected,
    Closable,
    MessageReceived,
    TopicAcl,
    TopicAclNow,
)
from broker.session import Session
from mqchat import access, auth, policy, topics
from mqchat.config import RedisSettings, Settings
from mqchat.errors import AuthError, StorageUnavailable
from mqchat.storage.base import AccessScope, ServerDirectory
from mqchat.storage.factory import open_directory
from mqchat.storage.invalidations import InvalidationFeed
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.tokens import ALL_DEVICES, Revocation, TokenStore

logger = logging.getLogger(__name__)

PRINCIPAL = "mqchat.principal"
#: The session's :class:`mqchat.access.Verdicts` (for the principal under :data:`PRINCIPAL`).
VERDICTS = "mqchat.verdicts"


class JwtAuthPlugin:
    """Accepts a CONNECT when its password is a valid token for its username and client id.

    Args:
        keys: what verifies tokens (:func:`mqchat.auth.load_keys`); signing keys are not used.
    """

    def __init__(self, keys: auth.KeySet) -> None:
        self._keys = keys

    async def authenticate(self, session: Session) -> bool:
        try:
            principal = auth.verify(self._keys, session.password or "", now=int(time.time()))
            auth.check_connect_identity(principal, client_id_=session.client_id, username=session.username)
            if session.will_flag and not principal.is_service:
                own = topics.device_presence(principal.user_id, principal.device_id)
                if session.will_topic != own:
                    raise AuthError("bad_will", "a device's last will must be on its own presence topic")
        except AuthError as exc:
            logger.info("refused CONNECT client_id=%r: %s", session.client_id, exc.reason)
            return False
        except Exception:
            logger.exception("auth plugin failed; refusing CONNECT (fail closed)")
            return False
        session.attributes[PRINCIPAL] = principal
        if principal.is_service:
            session.attributes[LIMITS_EXEMPT] = True  # bridge and workers: no publish rate limit
        return True


class _LazyDirectory:
    """The configured directory (SQLite, or PostgreSQL with ``directory.url``), opened on first use
    (plugins are built synchronously)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._directory: ServerDirectory | None = None
        self._lock = asyncio.Lock()

    async def _opened(self) -> ServerDirectory:
        if self._directory is None:
            async with self._lock:
                if self._directory is None:
                    self._directory = await open_directory(self._settings)
        return self._directory

    async def channel_ids_of(self, user_id: str) -> frozenset[str]:
        return await (await self._opened()).channel_ids_of(user_id)

    async def access_scope(self, user_id: str) -> AccessScope:
        return await (await self._opened()).access_scope(user_id)

    async def close(self) -> None:
        if self._directory is not None:
            await self._directory.close()


class TopicAclPlugin:
    """Applies :func:`mqchat.policy.authorize` to every subscribe, publish and delivery.

    Each session keeps its principal's verdicts (:class:`mqchat.access.Verdicts`: a topic is parsed
    and judged once per session), and users' channel sets are cached (:class:`mqchat.access.MembershipCache`),
    so a delivery is two dict lookups and a set membership test. With ``redis.url`` the plugin follows
    the access invalidation feed (``acl:invalidations``): a directory change drops the entries it
    concerns at once, and entries otherwise live ``broker.membership_cache_s``; without the feed,
    ``broker.membership_cache_unfed_s``.

    Args:
        settings: where the directory is (``directory.url``, else SQLite in ``data_dir``), the cache
            lifetimes (``broker.*``) and Redis (``redis.*``).
        membership_cache_s: overrides ``broker.membership_cache_unfed_s`` (tests and benchmarks).
    """

    def __init__(self, settings: Settings, *, membership_cache_s: float | None = None) -> None:
        b = settings.broker
        self._directory = _LazyDirectory(settings)
        unfed = b.membership_cache_unfed_s if membership_cache_s is None else membership_cache_s
        self._cache = access.MembershipCache(self._directory, unfed, fed_ttl_s=b.membership_cache_s)
        r = settings.redis
        self._redis = RedisClient.from_settings(r) if r.url else None
        self._follower: asyncio.Task[None] | None = None
        self._typing: dict[str, policy.TokenBucket] = {}  # client id → its typing rate limit

    async def on_broker_started(self) -> None:
        if self._redis is not None and self._follower is None:
            self._follower = asyncio.get_running_loop().create_task(
                access.follow_invalidations(InvalidationFeed(self._redis), [self._cache]),
                name="broker.acl.invalidations")

    def _typing_allowed(self, client_id: str) -> bool:
        now = time.monotonic()
        bucket = self._typing.get(client_id)
        if bucket is None:
            bucket = self._typing[client_id] = policy.TokenBucket(policy.TYPING_RATE_PER_S, policy.TYPING_BURST, now)
        return bucket.allow(now)

    async def on_client_disconnected(self, session: Session) -> None:
        self._typing.pop(session.client_id, None)

    def topic_allowed_now(self, session: Session, topic: str, action: Action) -> bool | None:
        """A delivery's decision from the session's verdicts and the cached channel sets (no
        coroutine); ``None`` for anything else, or when the cache has to be read."""
        if action is not Action.RECEIVE:
            return None
        attributes = session.attributes
        principal = attributes.get(PRINCIPAL)
        if not isinstance(principal, auth.Principal):
            return False
        verdicts = attributes.get(VERDICTS)
        if not isinstance(verdicts, access.Verdicts) or verdicts.principal is not principal:
            verdicts = attributes[VERDICTS] = access.Verdicts(principal)
        try:
            return access.decide_cached(verdicts, action, topic, self._cache)
        except Exception:
            logger.exception("ACL check failed for %s %s; denying (fail closed)", action, topic)
            return False

    async def topic_allowed(self, session: Session, topic: str, action: Action) -> bool:
        principal = session.attributes.get(PRINCIPAL)
        if not isinstance(principal, auth.Principal):
            return False
        verdicts = session.attributes.get(VERDICTS)
        if not isinstance(verdicts, access.Verdicts) or verdicts.principal is not principal:
            verdicts = session.attributes[VERDICTS] = access.Verdicts(principal)
        if action is Action.RECEIVE:  # the per-delivery path: no parsing, no waiting when cached
            try:
                known = access.decide_cached(verdicts, action, topic, self._cache)
            except Exception:
                logger.exception("ACL check failed for %s %s; denying (fail closed)", action, topic)
                return False
            if known is not None:
                return known
        try:
            decision = await access.check(principal, action, topic, self._cache, verdicts=verdicts)
            if not decision.allowed:
                if action is not Action.RECEIVE:
                    logger.info("denied %s %s to %s: %s", action.value, topic, session.client_id, decision.reason)
                return False
            if action is Action.PUBLISH and topic.startswith(topics.TYPING + "/"):
                return self._typing_allowed(session.client_id)
            return True
        except Exception:
            logger.exception("ACL check failed for %s %s; denying (fail closed)", action, topic)
            return False

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        if self._redis is not None:
            await self._redis.close()
        await self._directory.close()


TOKEN_CLOSES = Counter("mqchat_broker_token_closes_total", "Connections closed by the broker: token expired "
                       "or revoked.", ["reason"])
TOKEN_REFRESHES = Counter("mqchat_broker_token_refreshes_total", "In-band token refreshes (auth/{user}/{device}) "
                          "by outcome.", ["outcome"])
#: How long one read of the revocation stream waits for an entry (ms); the loop reads again at once.
REVOCATION_BLOCK_MS = 1000
#: Revocation checks (CONNECTs, in-band refreshes) read from Redis in one pipelined round trip.
REVOCATION_BATCH = 500


class TokenLifecyclePlugin:
    """Keeps each connection within its token's lifetime (docs/security.md, *Token lifecycle*).

    - **Expiry**: a connection is closed when its token expires (``exp`` plus ``auth.leeway_s``),
      unless the device handed the broker a newer token in-band first.
    - **In-band refresh**: a device publishes its new access token (the bare JWT) to
      ``auth/{user}/{device}``; if it verifies for the same user and device and is not revoked,
      the connection's expiry moves to the new token's. The PUBLISH is acknowledged as usual and
      never delivered or retained (the ACL refuses that topic to everyone).
    - **Revocation** (with ``redis.url``): a CONNECT whose token was revoked (logout, refresh
      token reuse) is refused, and every revocation on the ``auth:revocations`` stream closes the
      connections of that device (or user) whose token was issued before it, within about a second.

    Consulted after :class:`JwtAuthPlugin`, whose principal it reads.
    """

    def __init__(self, keys: auth.KeySet, redis: RedisSettings | None) -> None:
        self._keys = keys
        self._redis = RedisClient.from_settings(redis) if redis is not None and redis.url else None
        self._tokens = (TokenStore(self._redis, refresh_ttl_s=1, access_ttl_s=1)  # reads only: TTLs unused
                        if self._redis is not None else None)
        self._by_user: dict[str, dict[str, Session]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._pending: list[tuple[auth.Principal, asyncio.Future[bool]]] = []
        """Revocation checks waiting for the next batch."""
        self._checker: asyncio.Task[None] | None = None

    async def _revoked(self, principal: auth.Principal) -> bool:
        """Whether ``principal``'s token was revoked. Concurrent checks are coalesced: one batch of
        up to :data:`REVOCATION_BATCH` is read in one pipelined round trip (one Redis connection)
        while the next ones gather, so a CONNECT storm costs a few round trips, not a connection
        per device."""
        if self._tokens is None or principal.is_service:
            return False
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((principal, answer))
        if self._checker is None:
            self._checker = asyncio.get_running_loop().create_task(self._check_pending(),
                                                                   name="broker.tokens.revocation_checks")
        return await answer

    async def _check_pending(self) -> None:
        assert self._tokens is not None
        try:
            while self._pending:
                batch, self._pending = self._pending[:REVOCATION_BATCH], self._pending[REVOCATION_BATCH:]
                try:
                    befores = await self._tokens.revoked_before_many([(p.user_id, p.device_id) for p, _ in batch])
                except StorageUnavailable as exc:  # access tokens are short-lived: fail open, and say so
                    logger.warning("revocation of %d tokens (%s:%s...) not checked: %s", len(batch),
                                   batch[0][0].user_id, batch[0][0].device_id, exc)
                    befores = [0.0] * len(batch)
                except Exception as exc:
                    for _, answer in batch:
                        if not answer.done():
                            answer.set_exception(exc)
                    continue
                for (principal, answer), before in zip(batch, befores, strict=True):
                    if not answer.done():
                        answer.set_result(principal.issued_at < before)
        finally:
            self._checker = None

    async def authenticate(self, session: Session) -> bool | None:
        principal = session.attributes.get(PRINCIPAL)
        if not isinstance(principal, auth.Principal):
            return None
        if await self._revoked(principal):
            logger.info("refused CONNECT client_id=%r: token revoked", session.client_id)
            return False
        return True

    async def on_broker_started(self) -> None:
        if self._tokens is not None and self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="broker.tokens.revocations")

    async def on_client_connected(self, session: Session) -> None:
        principal = session.attributes.get(PRINCIPAL)
        if not isinstance(principal, auth.Principal):
            return
        self._by_user.setdefault(principal.user_id, {})[session.client_id] = session
        self._schedule(session, principal)

    async def on_client_disconnected(self, session: Session) -> None:
        principal = session.attributes.get(PRINCIPAL)
        if not isinstance(principal, auth.Principal):
            return
        held = self._by_user.get(principal.user_id, {})
        if held.get(session.client_id) is session:
            del held[session.client_id]
            if not held:
                self._by_user.pop(principal.user_id, None)
            if (timer := self._timers.pop(session.client_id, None)) is not None:
                timer.cancel()

    def _schedule(self, session: Session, principal: auth.Principal) -> None:
        if (old := self._timers.pop(session.client_id, None)) is not None:
            old.cancel()
        delay = max(0.0, principal.expires_at + self._keys.leeway_s - time.time())
        self._timers[session.client_id] = asyncio.get_running_loop().call_later(delay, self._expire, session)

    def _expire(self, session: Session) -> None:
        self._timers.pop(session.client_id, None)
        principal = session.attributes.get(PRINCIPAL)
        if isinstance(principal, auth.Principal) and principal.expires_at + self._keys.leeway_s > time.time():
            self._schedule(session, principal)  # extended meanwhile
            return
        self._close(session, "expired")

    def _close(self, session: Session, reason: str) -> None:
        conn = session.connection
        if conn is None or conn.state != "connected":
            return
        logger.info("closing %s: token %s", session.client_id, reason)
        TOKEN_CLOSES.labels(reason).inc()
        conn.close()

    async def on_message_received(self, session: Session, message: AppMessage) -> None:
        if not message.topic.startswith(topics.AUTH + "/"):
            return
        current = session.attributes.get(PRINCIPAL)
        if not isinstance(current, auth.Principal) or current.is_service:
            return
        if message.topic != topics.token_refresh(current.user_id, current.device_id):
            TOKEN_REFRESHES.labels("wrong_topic").inc()
            return
        try:
            new = auth.verify(self._keys, message.data.decode("utf-8", "replace").strip(), now=int(time.time()))
        except AuthError as exc:
            logger.info("in-band refresh from %s refused: %s", session.client_id, exc.reason)
            TOKEN_REFRESHES.labels(exc.reason).inc()
            return
        if (new.user_id, new.device_id, new.role) != (current.user_id, current.device_id, current.role):
            logger.info("in-band refresh from %s refused: the token is another device's", session.client_id)
            TOKEN_REFRESHES.labels("identity_mismatch").inc()
            return
        if await self._revoked(new):
            TOKEN_REFRESHES.labels("revoked").inc()
            self._close(session, "revoked")
            return
        if new.expires_at <= current.expires_at:
            TOKEN_REFRESHES.labels("not_newer").inc()
            return
        session.attributes[PRINCIPAL] = new
        if session.client_id in self._timers:
            self._schedule(session, new)
        TOKEN_REFRESHES.labels("ok").inc()

    async def _watch(self) -> None:
        """Close the connections each revocation on the stream names (read from its tail)."""
        assert self._tokens is not None
        after: str | None = None
        delay = 0.5
        while True:
            try:
                if after is None:
                    after = await self._tokens.revocations_tail()
                for revocation in await self._tokens.read_revocations(after, block_ms=REVOCATION_BLOCK_MS):
                    after = revocation.entry_id
                    self._apply(revocation)
                delay = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("reading revocations failed (%s); again in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _apply(self, revocation: Revocation) -> None:
        for session in list(self._by_user.get(revocation.user_id, {}).values()):
            principal = session.attributes.get(PRINCIPAL)
            if not isinstance(principal, auth.Principal):
                continue
            if revocation.device_id not in (ALL_DEVICES, principal.device_id):
                continue
            if principal.issued_at < revocation.before:
                self._close(session, "revoked")

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in (self._watcher, self._checker):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self._redis is not None:
            await self._redis.close()


if TYPE_CHECKING:  # static conformance: mypy checks each plugin against the protocols it implements

    def _conforms(jwt: JwtAuthPlugin, acl: TopicAclPlugin) -> tuple[Authenticator, TopicAcl, TopicAclNow,
                                                                    ClientDisconnected, BrokerStarted, Closable]:
        return jwt, acl, acl, acl, acl, acl

    def _conforms_tokens(t: TokenLifecyclePlugin) -> tuple[Authenticator, BrokerStarted, ClientConnected,
                                                           ClientDisconnected, MessageReceived, Closable]:
        return t, t, t, t, t, t
