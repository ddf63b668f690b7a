"""Routing and delivery: subscriptions, publish → deliver, and the queues behind the window.

::

    publish(topic) ──▶ TopicTree.match ──▶ for each subscriber: ACL (receive) ──▶ deliver
                                                  │
    deliver: connected, window open ──▶ in flight, written to its socket (no task, no queue)
             window full / socket backed up ──▶ session queue ──▶ fill() when acks free the window
             client away (persistent session) ──▶ session queue, ACL asked again when sent

QoS is min(publish, granted). QoS 0 to a backed-up socket is dropped (counted), as MQTT allows.
A full session queue drops its oldest message, counted by reason and recorded for the client's gap
notice, sent as soon as it can take a message again (:mod:`broker.gaps`).

**Big fan-outs are sliced.** A publish with more than :data:`FANOUT_SLICE` subscribers (and any
later publish to a topic whose fan-out is still running, to keep the per-topic order) is delivered
by one background task, :data:`FANOUT_SLICE` subscribers at a time, yielding to the event loop
between slices. The publisher's PUBACK, and every small delivery (a sender's ack, a user event),
then wait for one slice, not for a 10,000-member channel: a small message may overtake a big one
on another topic (MQTT orders per topic only), never one on its own. The fan-out's backlog is
bounded: past :data:`FANOUT_HIGH` waiting deliveries, a publish waits until it falls back under.

Shared subscriptions (``$share/{group}/{filter}``, MQTT 5 semantics for 3.1.1 clients, as
Mosquitto and EMQX apply them) live in a second topic tree whose entries are the groups, not the
clients: a matching publish goes to ONE member of each group, picked round robin among the
connected members whose in-flight window has room (then those whose window is full, least loaded
first; then, if none is connected, a persistent member, queued). When a member goes away with
shared messages unacknowledged or queued, :meth:`Router.redistribute` hands them to the other
connected members of the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker.limits import Stats
from broker.plugin_api import Action
from broker.plugin_chain import PluginChain
from broker.session import Outgoing, Session
from broker.topic_tree import TopicTree
from mqchat.mqtt import codec

if TYPE_CHECKING:
    from broker.connection import Connection

logger = logging.getLogger(__name__)

Spawn = Callable[[Awaitable[Any], str], "asyncio.Task[Any]"]

SHARE_PREFIX = "$share/"

#: Subscribers served per turn of the event loop by a big fan-out (see the module docstring).
FANOUT_SLICE = 256
#: Deliveries waiting in the sliced fan-out beyond which a publisher waits (its PUBACK, its next
#: packets) until the fan-out catches up: the back-pressure an inline fan-out gave, only later.
FANOUT_HIGH = 50_000


@dataclass(slots=True)
class _Fanout:
    """A publish being delivered slice by slice."""

    topic: str
    topic_bytes: bytes
    payload: bytes
    qos: int
    targets: list[tuple[str, int]]
    version: int
    """The router's subscription version when it was matched: equal versions, equal targets."""
    pos: int = 0


class InvalidShare(ValueError):
    """A ``$share/`` filter without a valid group name or topic filter (refused, SUBACK 0x80)."""


def parse_share(topic_filter: str) -> tuple[str, str] | None:
    """``(group, filter)`` of a shared subscription, ``None`` for a plain filter.

    The MQTT 5 rules [MQTT-4.8.2-1, -2]: the group name is at least one character and contains no
    ``/``, ``+`` or ``#``; a topic filter follows it.

    Raises:
        InvalidShare: a ``$share/`` filter that breaks them.
    """
    if not topic_filter.startswith(SHARE_PREFIX):
        return None
    group, sep, inner = topic_filter[len(SHARE_PREFIX):].partition("/")
    if not group or "+" in group or "#" in group:
        raise InvalidShare(f"invalid share name in {topic_filter!r}")
    if not sep or not inner:
        raise InvalidShare(f"no topic filter after the share name in {topic_filter!r}")
    return group, inner


class _Share:
    """The members of one shared subscription and where the round robin stands."""

    __slots__ = ("cursor", "members")

    def __init__(self) -> None:
        self.members: dict[str, int] = {}  # client id → granted QoS, in joining order
        self.cursor = 0


class Router:
    """The subscriptions of every session, and delivery to them.

    Args:
        sessions: the broker's sessions by client id (kept by :class:`broker.sessions.Sessions`).
        plugins: asked with ``Action.RECEIVE`` for every delivery.
        stats: the engine's counters.
        spawn: starts a tracked task (the ACL recheck of a resumed session's queue).
    """

    def __init__(self, sessions: dict[str, Session], plugins: PluginChain, stats: Stats, spawn: Spawn, *,
                 gap_topic: str = "") -> None:
        self.sessions = sessions
        self.gap_topic = gap_topic
        """Template (``{user}``) of the topic gap notices go to; empty: none are sent."""
        self._fanouts: deque[_Fanout] = deque()
        self._fanning: dict[str, int] = {}
        """Topic → its publishes waiting in (or being delivered by) the sliced fan-out."""
        self._fanout_task: asyncio.Task[Any] | None = None
        self._backlog = 0
        """Deliveries waiting in the sliced fan-out."""
        self._version = 0
        """Changes with every subscription change (fan-outs matched at one version have the same targets)."""
        self._room = asyncio.Event()
        """Set whenever the backlog is back under :data:`FANOUT_HIGH`."""
        self.tree = TopicTree()
        self.shared_tree = TopicTree()
        """Inner filter → the ``$share/...`` filters (the groups) subscribed with it."""
        self.shares: dict[str, _Share] = {}
        self.plugins = plugins
        self.stats = stats
        self._spawn = spawn

    # -- subscriptions ------------------------------------------------------------------------

    def subscribe(self, session: Session, flt: str, qos: int) -> None:
        """Add (or update) a subscription; ``flt`` may be a valid ``$share/`` filter."""
        shared = parse_share(flt)
        session.subscriptions[flt] = qos
        self._version += 1
        if shared is None:
            self.tree.add(flt, session.client_id, qos)
            return
        share = self.shares.get(flt)
        if share is None:
            share = self.shares[flt] = _Share()
            self.shared_tree.add(shared[1], flt, 0)
        share.members[session.client_id] = qos

    def unsubscribe(self, session: Session, flt: str) -> None:
        if session.subscriptions.pop(flt, None) is not None:
            self._remove(flt, session.client_id)

    def drop_subscriptions(self, session: Session) -> None:
        for flt in session.subscriptions:
            self._remove(flt, session.client_id)
        session.subscriptions = {}

    def _remove(self, flt: str, client_id: str) -> None:
        self._version += 1
        share = self.shares.get(flt)
        if share is None:
            self.tree.remove(flt, client_id)
            return
        share.members.pop(client_id, None)
        if not share.members:
            del self.shares[flt]
            self.shared_tree.remove(flt[len(SHARE_PREFIX):].partition("/")[2], flt)

    def subscribers(self) -> dict[str, list[tuple[Session, int]]]:
        """Filter → [(session, granted QoS)], for plugins that inspect the broker."""
        out: dict[str, list[tuple[Session, int]]] = {}
        for session in self.sessions.values():
            for flt, qos in session.subscriptions.items():
                out.setdefault(flt, []).append((session, qos))
        return out

    # -- delivery -----------------------------------------------------------------------------

    async def publish(self, topic: str, payload: bytes, qos: int) -> int:
        """Deliver to every matching subscription the ACL lets receive it, at min(publish, granted)
        QoS, and to one member of each matching shared subscription. Returns the number of
        sessions it goes to (for a sliced fan-out: the subscribers it will be offered to)."""
        targets = self.tree.match(topic)
        if not targets and not self.shares:
            return 0
        topic_bytes = codec.encode_topic(topic)
        sent = 0
        if len(targets) > FANOUT_SLICE or (targets and topic in self._fanning):
            self._fanouts.append(_Fanout(topic, topic_bytes, payload, qos, list(targets.items()), self._version))
            self._fanning[topic] = self._fanning.get(topic, 0) + 1
            self.stats.fanouts_deferred += 1
            self._backlog += len(targets)
            if self._fanout_task is None:
                self._fanout_task = self._spawn(self._run_fanouts(), "broker.fanout")
            sent = len(targets)
            while self._backlog > FANOUT_HIGH and self._fanout_task is not None:
                self.stats.fanout_waits += 1
                self._room.clear()
                await self._room.wait()
        elif targets:
            sent = await self._deliver_to(topic, topic_bytes, payload, qos, targets.items())
        if self.shares:
            for share in self.shared_tree.match(topic):
                if await self._deliver_shared(share, topic, topic_bytes, payload, qos):
                    sent += 1
        return sent

    async def _deliver_to(self, topic: str, topic_bytes: bytes, payload: bytes, qos: int,
                          targets: Iterable[tuple[str, int]]) -> int:
        check = bool(self.plugins.acls)
        allowed_now = self.plugins.allowed_now
        sent = 0
        sessions = self.sessions
        deliver = self.deliver
        receive = Action.RECEIVE
        for client_id, granted in targets:
            session = sessions.get(client_id)
            if session is None:
                continue
            if check:
                # the plugins' cached answer when they have one: no coroutine per delivery
                ok = allowed_now(session, topic, receive)
                if ok is None:
                    ok = await self.plugins.allowed(session, topic, receive)
                if not ok:
                    continue
            deliver(session, topic, topic_bytes, payload, granted if granted < qos else qos)
            sent += 1
        return sent

    async def _run_fanouts(self) -> None:
        """Deliver the queued big fan-outs in order, about :data:`FANOUT_SLICE` deliveries per turn
        of the event loop.

        Consecutive publishes to one topic with the same subscribers (no subscription changed in
        between) go out together, subscriber by subscriber: each subscriber gets all of them in
        one turn, hence in one send, in order — the write batching an inline fan-out had.
        """
        try:
            while self._fanouts:
                group = self._group()
                head = group[0]
                start = head.pos
                end = min(len(head.targets), start + max(1, FANOUT_SLICE // len(group)))
                for job in group:
                    try:
                        await self._deliver_to(job.topic, job.topic_bytes, job.payload, job.qos,
                                               job.targets[start:end])
                    except Exception:
                        logger.exception("fan-out of a message on %s failed; %d subscribers not served", job.topic,
                                         len(job.targets) - start)
                    job.pos = end
                    self._backlog -= end - start
                while self._fanouts and self._fanouts[0].pos >= len(self._fanouts[0].targets):
                    done = self._fanouts.popleft()
                    left = self._fanning[done.topic] - 1
                    if left:
                        self._fanning[done.topic] = left
                    else:
                        del self._fanning[done.topic]
                if self._backlog <= FANOUT_HIGH:
                    self._room.set()
                await asyncio.sleep(0)  # the writes of this slice go out; other clients' packets are handled
        finally:
            self._fanout_task = None
            self._room.set()

    def _group(self) -> list[_Fanout]:
        """The head fan-out and those right behind it that can go out with it: same topic, same
        subscribers, as far along (at most 64)."""
        head = self._fanouts[0]
        group = [head]
        for job in itertools.islice(self._fanouts, 1, 64):
            if job.topic != head.topic or job.version != head.version or job.pos != head.pos:
                break
            group.append(job)
        return group

    def fanouts_pending(self) -> int:
        """Deliveries still waiting in the sliced fan-out."""
        return self._backlog

    async def _deliver_shared(self, key: str, topic: str, topic_bytes: bytes, payload: bytes, qos: int, *,
                              exclude: str | None = None) -> bool:
        """Deliver to one member of the shared subscription ``key``: the next in round-robin
        order that is connected with room in its window; else the connected member with the
        least backlog; else (``exclude`` unset) a persistent member that is away. Members the ACL
        refuses are skipped. Returns whether a member took it."""
        share = self.shares.get(key)
        if share is None:
            return False
        members = list(share.members.items())
        start = share.cursor % len(members)
        ready: list[tuple[int, Session, int]] = []
        busy: list[tuple[int, Session, int]] = []
        away: list[tuple[int, Session, int]] = []
        for pos, (client_id, granted) in enumerate(members[start:] + members[:start]):
            session = self.sessions.get(client_id)
            if session is None or client_id == exclude:
                continue
            conn = session.connection
            if conn is None or conn.state != "connected":
                if not session.clean_session and exclude is None:
                    away.append((pos, session, granted))
            elif session.queue or conn.writing_paused or not session.window_open():
                busy.append((pos, session, granted))
            else:
                ready.append((pos, session, granted))
        busy.sort(key=lambda c: len(c[1].queue) + len(c[1].inflight))
        check = bool(self.plugins.acls)
        for pos, session, granted in (*ready, *busy, *away):
            if check and not await self.plugins.allowed(session, topic, Action.RECEIVE):
                continue
            share.cursor = start + pos + 1
            self.deliver(session, topic, topic_bytes, payload, min(qos, granted), share=key)
            return True
        return False

    async def redistribute(self, session: Session) -> int:
        """``session``'s connection ended: give the shared-subscription messages it had in flight
        (not yet acknowledged; QoS 2 ones it has received stay) or queued to the other connected
        members of their group, oldest first. Messages no other member can take stay with the
        session. A persistent session already resumed by a newer connection keeps everything.
        Returns how many messages moved."""
        current = self.sessions.get(session.client_id)
        if current is not None and current is not session and current.inflight is session.inflight:
            return 0  # resumed: the new connection resends them itself
        moved = 0
        for packet_id, message in list(session.inflight.items()):
            if message.share is None or message.released:
                continue
            if await self._deliver_shared(message.share, message.topic, codec.encode_topic(message.topic),
                                          message.payload, message.qos, exclude=session.client_id):
                session.inflight.pop(packet_id, None)
                moved += 1
        if any(m.share is not None for m in session.queue):
            for message in list(session.queue):
                if message.share is None:
                    continue
                if await self._deliver_shared(message.share, message.topic, codec.encode_topic(message.topic),
                                              message.payload, message.qos, exclude=session.client_id):
                    with contextlib.suppress(ValueError):
                        session.queue.remove(message)
                    moved += 1
        if moved:
            logger.info("%d shared-subscription messages of %s given to other members", moved, session.client_id)
        return moved

    def deliver(self, session: Session, topic: str, topic_bytes: bytes, payload: bytes, qos: int,
                retain: bool = False, share: str | None = None) -> None:
        conn = session.connection
        if conn is None or conn.state != "connected":
            if qos and not session.clean_session and session.enqueue(
                    Outgoing(topic, payload, qos, retain, recheck=True, share=share)) is not None:
                self.stats.dropped_queue_full += 1
            return
        if qos == 0:
            if conn.writing_paused:
                self.stats.dropped_qos0 += 1
                return
            conn.write(codec.encode_publish(topic_bytes, payload, 0, retain))
            self.stats.deliveries += 1
            return
        if session.queue or conn.writing_paused or not session.window_open():
            if session.enqueue(Outgoing(topic, payload, qos, retain, share=share)) is not None:
                self.stats.dropped_queue_full += 1
            return
        message = session.take_inflight(Outgoing(topic, payload, qos, retain, share=share))
        conn.write(codec.encode_publish(topic_bytes, payload, qos, retain, message.packet_id))
        self.stats.deliveries += 1

    def resend_inflight(self, conn: Connection, session: Session) -> None:
        """A resumed session: its in-flight messages again, with DUP set, then its queue
        [MQTT-4.4.0-1]."""
        for message in session.inflight.values():
            if message.released:
                conn.write(codec.encode_ack(codec.PUBREL, message.packet_id))
            else:
                conn.write(codec.encode_publish(codec.encode_topic(message.topic), message.payload,
                                                message.qos, message.retain, message.packet_id, dup=True))
        self.fill(conn)

    def fill(self, conn: Connection) -> None:
        """Move queued messages into the in-flight window while it has room."""
        session = conn.session
        if session is None:
            return
        if session.gaps:
            self.notify_gap(conn, session)
        if conn.flush_task is not None:
            return
        while session.queue and session.window_open() and not conn.writing_paused and conn.state == "connected":
            head = session.queue[0]
            if head.recheck and self.plugins.acls:
                conn.flush_task = self._spawn(self._flush_checked(conn, session), "broker.connection.flush")
                return
            session.queue.popleft()
            self._send_queued(conn, session, head)

    async def _flush_checked(self, conn: Connection, session: Session) -> None:
        """The queue of a resumed session: each message is checked against the ACL again, since
        membership may have changed while the client was away."""
        try:
            while (session.queue and session.window_open() and not conn.writing_paused
                   and conn.state == "connected"):
                head = session.queue[0]
                allowed = not head.recheck or await self.plugins.allowed(session, head.topic, Action.RECEIVE)
                if conn.state != "connected" or not session.queue or session.queue[0] is not head:
                    return
                session.queue.popleft()
                if allowed:
                    self._send_queued(conn, session, head)
                else:
                    self.stats.dropped_not_allowed += 1
                    logger.info("dropping a queued message on %s for %s: no longer allowed", head.topic,
                                session.client_id)
        finally:
            conn.flush_task = None

    def _send_queued(self, conn: Connection, session: Session, message: Outgoing) -> None:
        message.recheck = False
        session.take_inflight(message)
        conn.write(codec.encode_publish(codec.encode_topic(message.topic), message.payload, message.qos,
                                        message.retain, message.packet_id))
        self.stats.deliveries += 1

    def notify_gap(self, conn: Connection, session: Session) -> bool:
        """Tell the client what was dropped for it (:mod:`broker.gaps`), if it can take a message
        now: in flight at QoS 1 on its gap topic, ahead of its queue. A client not subscribed to
        that topic cannot be told (the drops stay counted). Returns whether a notice went out."""
        if not self.gap_topic or not session.username:
            session.gaps.topics.clear()  # nobody to tell: the drops stay counted
            return False
        topic = self.gap_topic.format(user=session.username)
        granted = session.subscriptions.get(topic)
        if granted is None:
            session.gaps.topics.clear()
            return False
        if conn.state != "connected" or conn.writing_paused or not session.window_open():
            return False
        payload = session.gaps.notice()
        qos = min(1, granted)
        if qos:
            message = session.take_inflight(Outgoing(topic, payload, qos))
            conn.write(codec.encode_publish(codec.encode_topic(topic), payload, qos, False, message.packet_id))
        else:
            conn.write(codec.encode_publish(codec.encode_topic(topic), payload, 0))
        self.stats.gap_notices += 1
        self.stats.deliveries += 1
        logger.info("told %s what was dropped for it: %s", session.client_id, payload[:200].decode(errors="replace"))
        return True
