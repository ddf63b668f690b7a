"""Native plugins (:mod:`broker.plugin_api`): JWT authentication and the topic ACL.

Both are built by :func:`broker.app.native_plugins` from typed settings. The authenticated
:class:`~mqchat.auth.Principal` is kept on the session (``session.attributes``), where the ACL
plugin finds it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from broker.plugin_api import LIMITS_EXEMPT, Action, Authenticator, ClientDisconnected, Closable, TopicAcl
from broker.session import Session
from mqchat import access, auth, policy, topics
from mqchat.config import Settings
from mqchat.errors import AuthError
from mqchat.storage.base import Directory
from mqchat.storage.factory import open_directory

logger = logging.getLogger(__name__)

PRINCIPAL = "mqchat.principal"


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
        self._directory: Directory | None = None
        self._lock = asyncio.Lock()

    async def channel_ids_of(self, user_id: str) -> frozenset[str]:
        if self._directory is None:
            async with self._lock:
                if self._directory is None:
                    self._directory = await open_directory(self._settings)
        return await self._directory.channel_ids_of(user_id)

    async def close(self) -> None:
        if self._directory is not None:
            await self._directory.close()


class TopicAclPlugin:
    """Applies :func:`mqchat.policy.authorize` to every subscribe, publish and delivery.

    Args:
        settings: where the directory is (``directory.url``, else SQLite in ``data_dir``).
        membership_cache_s: how long a user's channel set is trusted.
    """

    def __init__(self, settings: Settings, *, membership_cache_s: float) -> None:
        self._directory = _LazyDirectory(settings)
        self._cache = access.MembershipCache(self._directory, membership_cache_s)
        self._typing: dict[str, policy.TokenBucket] = {}  # client id → its typing rate limit

    def _typing_allowed(self, client_id: str) -> bool:
        now = time.monotonic()
        bucket = self._typing.get(client_id)
        if bucket is None:
            bucket = self._typing[client_id] = policy.TokenBucket(policy.TYPING_RATE_PER_S, policy.TYPING_BURST, now)
        return bucket.allow(now)

    async def on_client_disconnected(self, session: Session) -> None:
        self._typing.pop(session.client_id, None)

    async def topic_allowed(self, session: Session, topic: str, action: Action) -> bool:
        principal = session.attributes.get(PRINCIPAL)
        if not isinstance(principal, auth.Principal):
            return False
        try:
            decision = await access.check(principal, action, topic, self._cache)
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
        await self._directory.close()


if TYPE_CHECKING:  # static conformance: mypy checks each plugin against the protocols it implements

    def _conforms(jwt: JwtAuthPlugin, acl: TopicAclPlugin) -> tuple[Authenticator, TopicAcl, ClientDisconnected,
                                                                    Closable]:
        return jwt, acl, acl, acl
