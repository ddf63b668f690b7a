"""The session registry: one :class:`~broker.session.Session` per client id, takeover and resume.

A CONNECT builds a new session; :meth:`Sessions.attach` then settles it against the one held for
that client id: an old connection still open is closed without its will (takeover
[MQTT-3.1.4-2]: the client is not gone), and a persistent session's subscriptions, in-flight
messages and queue carry over (clean session 0 on both sides). When a connection ends,
:meth:`Sessions.release` forgets a clean session; a persistent one stays, queueing, until its
client is back — for at most ``broker.session_expiry_s``: a persistent session whose client stays
away that long is dropped with its queue. :meth:`Sessions.user_full` caps the live connections of
one username (``broker.max_connections_per_user``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from broker.limits import Limits, Stats
from broker.routing import Router
from broker.session import Session

if TYPE_CHECKING:
    from broker.connection import Connection

logger = logging.getLogger(__name__)


class Sessions:
    """Every session the broker holds, by client id.

    Args:
        by_id: the sessions by client id (the router reads the same mapping).
        limits: the in-flight window and queue bound of new sessions.
        router: its subscriptions are dropped with a clean session.
    """

    def __init__(self, by_id: dict[str, Session], limits: Limits, router: Router, stats: Stats | None = None) -> None:
        self.by_id = by_id
        self._limits = limits
        self._router = router
        self._stats = stats or Stats()
        self._by_user: dict[str, set[str]] = {}
        """username → client ids with a live connection."""
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        """client id → when its away persistent session is dropped."""

    def user_full(self, username: str, client_id: str) -> bool:
        """Whether ``username`` already holds ``max_connections_per_user`` live connections (a
        reconnect of ``client_id`` replaces its own and does not count)."""
        cap = self._limits.max_connections_per_user
        if not cap:
            return False
        return len(self._by_user.get(username, set()) - {client_id}) >= cap

    def new(self, client_id: str, *, exempt: bool = False) -> Session:
        inflight, queued = self._limits.window(exempt=exempt)
        return Session(client_id, max_inflight=inflight, max_queued=queued)

    def exempt(self, session: Session) -> None:
        """Give ``session`` the larger window of a trusted client."""
        session.max_inflight, session.max_queued = self._limits.window(exempt=True)

    def attach(self, conn: Connection, session: Session) -> bool:
        """Make ``session`` (just authenticated on ``conn``) the client's session. Returns whether
        a persistent session was resumed (CONNACK's session-present flag)."""
        client_id = session.client_id
        old = self.by_id.get(client_id)
        present = False
        if old is not None:
            old_conn = old.connection
            if old_conn is not None and old_conn.state != "closed":
                logger.info("client %s connected again; closing its previous connection", client_id)
                old_conn.no_will = True  # takeover [MQTT-3.1.4-2]: the client is not gone
                old_conn.state = "closing"  # from now on nothing is sent or handled on it
                old_conn.abort()
            if session.clean_session or old.clean_session:
                self._router.drop_subscriptions(old)
            else:
                present = True
                session.subscriptions, session.inflight, session.queue = old.subscriptions, old.inflight, old.queue
                session.incoming_qos2, session.dropped, session.gaps = old.incoming_qos2, old.dropped, old.gaps
                session.continue_packet_ids(old)
        session.connection = conn
        conn.session = session
        self.by_id[client_id] = session
        if (expiry := self._expiry.pop(client_id, None)) is not None:
            expiry.cancel()
        if session.username:
            self._by_user.setdefault(session.username, set()).add(client_id)
        return present

    def release(self, session: Session) -> None:
        """The connection of ``session`` ended: keep it if persistent, forget it if clean. A
        session already taken over by a newer connection is left alone."""
        if self.by_id.get(session.client_id) is not session:
            return
        session.connection = None
        if session.username and (held := self._by_user.get(session.username)) is not None:
            held.discard(session.client_id)
            if not held:
                del self._by_user[session.username]
        if session.clean_session:
            self._router.drop_subscriptions(session)
            del self.by_id[session.client_id]
        else:
            self._expire_later(session)

    def _expire_later(self, session: Session) -> None:
        if self._limits.session_expiry_s <= 0:
            return
        if (old := self._expiry.pop(session.client_id, None)) is not None:
            old.cancel()
        self._expiry[session.client_id] = asyncio.get_running_loop().call_later(
            self._limits.session_expiry_s, self._expire, session)

    def _expire(self, session: Session) -> None:
        self._expiry.pop(session.client_id, None)
        if self.by_id.get(session.client_id) is not session or session.connection is not None:
            return
        logger.info("persistent session %s expired after %.0fs away; dropping it and %d queued messages",
                    session.client_id, self._limits.session_expiry_s, len(session.queue))
        self._router.drop_subscriptions(session)
        del self.by_id[session.client_id]
        self._stats.sessions_expired += 1
        self._stats.dropped_session_expired += len(session.queue)

    def offline(self, client_id: str) -> Session:
        """The session of ``client_id``; a persistent one with no connection is created if there
        is none (for plugins that subscribe on a client's behalf)."""
        session = self.by_id.get(client_id)
        if session is None:
            session = self.new(client_id)
            session.clean_session = False
            self.by_id[client_id] = session
            self._expire_later(session)
        return session
