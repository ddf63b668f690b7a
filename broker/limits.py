"""Per-client limits (the ``broker.*`` settings) and the engine's counters."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-client limits (``broker.*`` settings)."""

    max_packet_bytes: int = 256 * 1024
    max_inflight: int = 100
    max_queued: int = 1_000
    publish_rate_per_s: float = 0.0
    """PUBLISH packets per second a client may send, sustained; a faster client is slowed down
    (its packets wait, then its socket is no longer read), never disconnected. 0: no limit."""
    publish_burst: int = 1_000
    connect_timeout_s: float = 10.0
    max_connections_per_user: int = 0
    """Live connections per username (services exempt); a CONNECT over it gets CONNACK 0x03. 0: no limit."""
    session_expiry_s: float = 0.0
    """A persistent session whose client is away this long is dropped with its queue. 0: never."""
    retained_max_count: int = 0
    """Retained messages kept; a retained PUBLISH to a new topic beyond it is not kept. 0: no limit."""
    retained_max_bytes: int = 0
    """Total retained payload bytes; a retained PUBLISH that would pass it is not kept. 0: no limit."""
    retain_prefixes: tuple[str, ...] = ()
    """Topics whose RETAIN flag is honoured (prefixes); elsewhere the message is delivered and not
    kept. Empty: every topic (the bare broker)."""
    validate_presence: bool = False
    """Device presence payloads (``presence/{user}/{device}``) must be mqchat presence JSON; a bad
    one is dropped (neither relayed nor kept)."""
    gap_topic: str = ""
    """Where a client learns what the broker dropped for it (:mod:`broker.gaps`): a topic with
    ``{user}`` for its username (mqchat: ``user/{user}/events``); sent only to a client subscribed
    to it. Empty: no gap notices (the bare broker)."""

    def window(self, *, exempt: bool) -> tuple[int, int]:
        """``(max_inflight, max_queued)`` of a session; exempt clients (services) get 10x the
        window and 100x the queue."""
        if exempt:
            return min(self.max_inflight * 10, 65_000), self.max_queued * 100
        return self.max_inflight, self.max_queued


@dataclass
class Stats:
    """Counters the metrics collector reads (plain ints: cheaper than a metric per delivery)."""

    deliveries: int = 0
    dropped_queue_full: int = 0
    """QoS 1/2 messages dropped from a full session queue (the oldest goes)."""
    dropped_qos0: int = 0
    """QoS 0 deliveries dropped because the subscriber's socket was backed up."""
    dropped_session_expired: int = 0
    """Queued messages dropped with a persistent session that stayed away too long."""
    dropped_not_allowed: int = 0
    """Queued messages dropped when sent: the ACL no longer lets the client receive them."""
    gap_notices: int = 0
    """Gap notices sent (a client told what was dropped for it)."""
    fanouts_deferred: int = 0
    """Publishes whose delivery went to the sliced fan-out (many subscribers, or behind one that did)."""
    fanout_waits: int = 0
    """Times a publisher waited for the sliced fan-out's backlog to fall under its bound."""
    violations: int = 0
    rate_limited: int = 0
    wills: int = 0
    retained_refused: int = 0
    invalid_presence: int = 0
    sessions_expired: int = 0
    user_connection_refusals: int = 0
