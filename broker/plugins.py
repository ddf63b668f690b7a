"""amqtt plugins: JWT authentication and the topic ACL.

amqtt builds each plugin from a dotted path and fills its nested ``Config`` dataclass from plain
data, so everything a plugin needs arrives as strings and numbers (built by
:func:`broker.app.amqtt_config`). The authenticated :class:`~mqchat.auth.Principal` is kept on the
session (``session.attributes``), where the ACL plugin finds it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amqtt.contexts import Action as AmqttAction
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session

from broker.engine import LIMITS_EXEMPT
from mqchat import access, auth, policy, topics
from mqchat.config import CassandraSettings
from mqchat.errors import AuthError
from mqchat.storage.base import Directory
from mqchat.storage.factory import open_directory_from

logger = logging.getLogger(__name__)

PRINCIPAL = "mqchat.principal"


class JwtAuthPlugin(BaseAuthPlugin):
    """Accepts a CONNECT when its password is a valid token for its username and client id."""

    @dataclass
    class Config:
        verify_key: str
        """HS256 secret or PEM public key."""
        algorithms: list[str] = field(default_factory=lambda: ["HS256"])
        audience: str = "mqchat"
        issuer: str = "mqchat"
        leeway_s: int = 30

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        c = self.config
        self._keys = auth.KeySet(None, c.verify_key, tuple(c.algorithms), c.audience, c.issuer, 0, c.leeway_s)

    async def authenticate(self, *, session: Session) -> bool:
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
    """The configured directory, opened on first use (plugins are built synchronously)."""

    def __init__(self, backend: str, directory_db: Path, cassandra: CassandraSettings) -> None:
        self._args = (backend, directory_db, cassandra)
        self._directory: Directory | None = None
        self._lock = asyncio.Lock()

    async def channel_ids_of(self, user_id: str) -> frozenset[str]:
        if self._directory is None:
            async with self._lock:
                if self._directory is None:
                    self._directory = await open_directory_from(*self._args)
        return await self._directory.channel_ids_of(user_id)

    async def close(self) -> None:
        if self._directory is not None:
            await self._directory.close()


class TopicAclPlugin(BaseTopicPlugin):
    """Applies :func:`mqchat.policy.authorize` to every subscribe, publish and delivery."""

    @dataclass
    class Config:
        directory_db: str
        membership_cache_s: float = 1.0
        store_backend: str = "sqlite"
        cassandra: str = "{}"
        """CassandraSettings as JSON, for the cassandra backend."""

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        self._directory = _LazyDirectory(self.config.store_backend, Path(self.config.directory_db),
                                         CassandraSettings.model_validate_json(self.config.cassandra))
        self._cache = access.MembershipCache(self._directory, self.config.membership_cache_s)
        self._typing: dict[str, policy.TokenBucket] = {}  # client id → its typing rate limit

    def _typing_allowed(self, client_id: str) -> bool:
        now = time.monotonic()
        bucket = self._typing.get(client_id)
        if bucket is None:
            bucket = self._typing[client_id] = policy.TokenBucket(policy.TYPING_RATE_PER_S, policy.TYPING_BURST, now)
        return bucket.allow(now)

    async def on_broker_client_disconnected(self, *, client_id: str, client_session: Any) -> None:
        self._typing.pop(client_id, None)

    async def topic_filtering(
        self, *, session: Session | None = None, topic: str | None = None, action: AmqttAction | None = None,
    ) -> bool:
        if session is None or topic is None or action is None:
            return False
        principal = session.attributes.get(PRINCIPAL)
        if not isinstance(principal, auth.Principal):
            return False
        try:
            decision = await access.check(principal, policy.Action(action.value), topic, self._cache)
            if not decision.allowed:
                if action is not AmqttAction.RECEIVE:
                    logger.info("denied %s %s to %s: %s", action.value, topic, session.client_id, decision.reason)
                return False
            if action is AmqttAction.PUBLISH and topic.startswith(topics.TYPING + "/"):
                return self._typing_allowed(session.client_id or "")
            return True
        except Exception:
            logger.exception("ACL check failed for %s %s; denying (fail closed)", action, topic)
            return False

    async def close(self) -> None:
        await self._directory.close()
