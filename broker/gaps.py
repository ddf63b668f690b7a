"""What a client missed: deliveries the broker dropped for it, and the gap notice that tells it.

The broker drops a delivery for one client only when that client cannot keep up (docs/broker.md,
"Slow consumers"): its queue behind the in-flight window is full (``queue_full``, the oldest queued
message goes), a QoS 0 message meets a backed-up socket (``qos0_backlog``), a persistent session
stays away past ``broker.session_expiry_s`` (``session_expired``, its queue goes with it), or a
queued message is no longer allowed when it is finally sent (``not_allowed``). Every drop is counted
by reason (``mqchat_broker_dropped_total{reason}``).

A dropped channel message is never silent to the device. Channel seqs are gap-free, so a later
message on the same channel shows the gap — but the drop may be the channel's last message for a
while. So for ``queue_full`` drops the session records, per topic, how many it lost and the seq
range (read from the dropped payloads only, never on the delivery path), and as soon as the
client can take a message again the broker sends it, alone (this device only, QoS 1, never
queued, so it cannot be dropped itself), a gap notice on its ``user/{user}/events`` topic::

    {"type": "gap", "reason": "queue_full", "channels": [{"channel": "cX7…", "missed": 3,
     "first_seq": 17, "last_seq": 40}], "other": 0, "v": 1}

``other`` counts dropped messages of other topics (acks, user events, presence); the device syncs
the listed channels (``POST /v1/sync`` from its own ``last_seq``; everything when ``other`` > 0).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mqchat import topics

#: Why a delivery was dropped: the ``reason`` label of ``mqchat_broker_dropped_total``.
QUEUE_FULL = "queue_full"
QOS0_BACKLOG = "qos0_backlog"
SESSION_EXPIRED = "session_expired"
NOT_ALLOWED = "not_allowed"
REASONS = (QUEUE_FULL, QOS0_BACKLOG, SESSION_EXPIRED, NOT_ALLOWED)

_STREAM_PREFIX = topics.STREAM + "/"


@dataclass(slots=True)
class Missed:
    """Messages of one topic dropped for one session since its last gap notice."""

    count: int = 0
    first_seq: int | None = None
    last_seq: int | None = None

    def add(self, seq: int | None) -> None:
        self.count += 1
        if seq is not None:
            self.first_seq = seq if self.first_seq is None else min(self.first_seq, seq)
            self.last_seq = seq if self.last_seq is None else max(self.last_seq, seq)


@dataclass(slots=True)
class Gaps:
    """A session's dropped messages not yet announced, by topic."""

    topics: dict[str, Missed] = field(default_factory=dict)

    def record(self, topic: str, payload: bytes) -> None:
        """A message on ``topic`` was dropped; a channel message's seq is read from its payload."""
        seq: int | None = None
        if topic.startswith(_STREAM_PREFIX):
            seq = _seq_of(payload)
        self.topics.setdefault(topic, Missed()).add(seq)

    def __bool__(self) -> bool:
        return bool(self.topics)

    def notice(self, reason: str = QUEUE_FULL) -> bytes:
        """The gap notice for everything recorded (then forgotten)."""
        channels = []
        other = 0
        for topic, m in self.topics.items():
            if topic.startswith(_STREAM_PREFIX):
                channels.append({"channel": topic[len(_STREAM_PREFIX):], "missed": m.count,
                                 "first_seq": m.first_seq, "last_seq": m.last_seq})
            else:
                other += m.count
        self.topics = {}
        return json.dumps({"type": "gap", "reason": reason, "channels": channels, "other": other, "v": 1},
                          separators=(",", ":")).encode()


def _seq_of(payload: bytes) -> int | None:
    try:
        doc = json.loads(payload)
    except ValueError:
        return None
    seq = doc.get("seq") if isinstance(doc, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None
