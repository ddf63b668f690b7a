"""A client session: who it is (the fields amqtt plugins read) and its outbound message state.

The state follows MQTT 3.1.1 §4.4 and §4.6: QoS 1 and 2 messages sent and not yet acknowledged sit
in ``inflight`` in send order, at most ``max_inflight`` of them; further messages wait in ``queue``
(bounded by ``max_queued``: when it is full the oldest is dropped, counted and recorded in
``gaps`` for the client's gap notice, see :mod:`broker.gaps`). A persistent
session (clean session 0) keeps both while its client is away; on resume the in-flight messages are
sent again, with DUP set, before anything new [MQTT-4.4.0-1].
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker.gaps import Gaps

if TYPE_CHECKING:
    from broker.connection import Connection


@dataclass(slots=True)
class Outgoing:
    """A message on its way to one client."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False
    packet_id: int = 0
    released: bool = False
    """QoS 2: PUBREC received and PUBREL sent; waiting for PUBCOMP."""
    recheck: bool = False
    """Queued while the client was away: the ACL is asked again before it is sent."""
    share: str | None = None
    """Delivered through this shared subscription (``$share/{group}/{filter}``): if the client goes
    away before acknowledging it, another member of the group gets it."""


class Session:
    """One client id's session.

    The identity attributes have amqtt's names (``client_id``, ``username``, ``password``,
    ``clean_session``, ``keep_alive``, ``will_*``, ``attributes``, ``remote_address``), so amqtt
    auth, topic and event plugins work unchanged.
    """

    def __init__(self, client_id: str, *, max_inflight: int, max_queued: int) -> None:
        self.client_id: str = client_id
        self.username: str | None = None
        self.password: str | None = None
        self.clean_session: bool = True
        self.keep_alive: int = 0
        self.will_flag: bool = False
        self.will_topic: str | None = None
        self.will_message: bytes | None = None
        self.will_qos: int = 0
        self.will_retain: bool = False
        self.remote_address: str | None = None
        self.remote_port: int | None = None
        self.is_anonymous: bool = False
        self.attributes: dict[str, Any] = {}
        """Plugins' per-client state."""
        self.connection: Connection | None = None
        """The live connection of this session; None while its client is away."""

        self.subscriptions: dict[str, int] = {}  # filter → granted QoS
        self.inflight: OrderedDict[int, Outgoing] = OrderedDict()
        self.queue: deque[Outgoing] = deque()
        self.incoming_qos2: set[int] = set()  # packet ids received at QoS 2, awaiting PUBREL
        self.max_inflight = max_inflight
        self.max_queued = max_queued
        self.dropped = 0
        """Messages dropped because the queue was full."""
        self.gaps = Gaps()
        """Dropped messages the client has not been told about yet (:mod:`broker.gaps`)."""
        self._next_id = 0

    def next_packet_id(self) -> int:
        for _ in range(65_535):
            self._next_id = self._next_id % 65_535 + 1
            if self._next_id not in self.inflight:
                return self._next_id
        raise RuntimeError("no free packet identifier")  # cannot happen: max_inflight < 65535

    def continue_packet_ids(self, previous: Session) -> None:
        """A resumed session goes on from ``previous``'s packet identifiers (those in flight are
        carried over with it)."""
        self._next_id = previous._next_id

    def window_open(self) -> bool:
        return len(self.inflight) < self.max_inflight

    def enqueue(self, message: Outgoing) -> Outgoing | None:
        """Queue a message to send later; if the queue is full the oldest is dropped (recorded in
        ``gaps``) and returned."""
        if self.max_queued <= 0:
            lost = message
        elif len(self.queue) >= self.max_queued:
            lost = self.queue.popleft()
            self.queue.append(message)
        else:
            self.queue.append(message)
            return None
        self.dropped += 1
        self.gaps.record(lost.topic, lost.payload)
        return lost

    def take_inflight(self, message: Outgoing) -> Outgoing:
        """Give ``message`` a packet id and record it as in flight."""
        message.packet_id = self.next_packet_id()
        self.inflight[message.packet_id] = message
        return message

    def complete(self, packet_id: int, qos: int) -> bool:
        """PUBACK (``qos`` 1) or PUBCOMP (``qos`` 2): that message is done. False (and nothing
        changed) for an unknown id or one in flight at another QoS."""
        message = self.inflight.get(packet_id)
        if message is None or message.qos != qos:
            return False
        del self.inflight[packet_id]
        return True

    def received(self, packet_id: int) -> bool:
        """PUBREC: the client has the QoS 2 message; PUBREL goes next. False for an unknown id."""
        message = self.inflight.get(packet_id)
        if message is None or message.qos != 2:
            return False
        message.released = True
        return True

    def __repr__(self) -> str:
        return f"Session({self.client_id!r}, inflight={len(self.inflight)}, queued={len(self.queue)})"
