"""Channel ownership for several bridges: partitions, rendezvous assignment and Redis leases.

A bridge orders only the channels of the partitions it holds a lease on, so at most one bridge
sequences a channel at a time. How sends reach the owner (``bridge.shared_intake``):

- **shared intake** (default): the bridges share ``$share/bridges/in/+/+/+``, so the broker
  delivers each send to ONE bridge. A bridge that does not own the send's channel forwards it, as
  received, to the bridge it computes as the owner (:meth:`Ownership.owner_of`) on that bridge's
  own topic ``bridge/fwd/{bridge_id}/in/{user}/{device}/{channel}`` (QoS 1); a forwarded send is
  never forwarded again. Cost per send: one delivery, plus a publish and a delivery for the
  (N-1)/N of sends that land on another bridge. Order: the channel's order is the owner's, so it
  holds; two sends of one device to one channel may be ordered differently from their sending
  order if one was forwarded and the other not (MQTT orders per publisher and topic; the product
  promises one total order per channel, not sending order).
- **plain** (``shared_intake`` off, for brokers without ``$share``): every bridge receives every
  send and ignores those it does not own; the broker delivers each send N times.

Partition ``p`` is assigned to the live bridge with the highest ``hash(p, bridge)`` (rendezvous
hashing: when a bridge joins or leaves, only its share of partitions moves). Each bridge heartbeats
its membership, claims the leases of its assigned partitions, and releases the ones it is no longer
assigned; a dead bridge's leases expire after ``lease_ms``. The policy is here; every Redis command
is in :class:`mqchat.storage.leases.ChannelLeases`.

The fence: a bridge trusts its own lease only until ``claimed_at + lease_ms - safety``, measured on
its own monotonic clock, and the message store's append is a compare-and-set on the channel's
position (SQLite: checked in the write transaction; Cassandra: a conditional batch). So even a
bridge that is paused past its lease and wakes up with a stale view cannot write: its proposed seq
no longer follows the stored position, the append is refused, and the bridge drops its positions.
Sends that arrive during a handover (or that are forwarded to a bridge that has just lost the
channel) are answered by nobody; devices resend with the same cmid after their ack timeout, and
the new owner answers (idempotently). A bridge that dies with sends it has taken but not
forwarded or stored loses only unacknowledged sends, which their devices resend.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mqchat.storage.leases import ChannelLeases


def partition_of(channel: str, partitions: int) -> int:
    """The partition a channel belongs to (stable across processes and versions)."""
    return zlib.crc32(channel.encode()) % partitions


def _score(partition: int, bridge: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{partition}|{bridge}".encode(), digest_size=8).digest(), "big")


def assign(partition: int, bridges: Sequence[str]) -> str | None:
    """Rendezvous hashing: the bridge that should own ``partition`` among the live ``bridges``."""
    return max(bridges, key=lambda b: _score(partition, b), default=None)


@dataclass
class Ownership:
    """One bridge's view of the partitions it owns, kept current by :meth:`tick`.

    Args:
        leases: membership and lease storage (Redis).
        bridge_id: unique among bridges (``b{worker_id}``); stable across restarts so a restarted
            bridge takes its own leases back at once.
        partitions: number of partitions (the same on every bridge).
        lease_ms: lease lifetime; :meth:`tick` should run every third of it.
    """

    leases: ChannelLeases
    bridge_id: str
    partitions: int = 64
    lease_ms: int = 3000
    owned: dict[int, float] = field(default_factory=dict)
    """partition → local deadline (monotonic seconds) until which this bridge may act on it."""
    live: list[str] = field(default_factory=list)
    """The live bridges at the last heartbeat."""

    def owner_of(self, channel: str) -> str | None:
        """The bridge that should own ``channel``'s partition among the live bridges (it may not
        hold the lease yet: then the send goes unanswered and its device resends)."""
        return assign(partition_of(channel, self.partitions), self.live)

    def owns(self, channel: str, now: float | None = None) -> bool:
        deadline = self.owned.get(partition_of(channel, self.partitions))
        return deadline is not None and deadline > (time.monotonic() if now is None else now)

    async def tick(self) -> tuple[set[int], set[int]]:
        """Heartbeat, then claim/renew assigned partitions and release the others.

        Returns:
            ``(gained, lost)`` partitions since the previous tick.
        """
        started = time.monotonic()
        now_ms = time.time_ns() // 1_000_000
        live = await self.leases.heartbeat(self.bridge_id, now_ms=now_ms, lease_ms=self.lease_ms)
        self.live = sorted(live)
        mine = {p for p in range(self.partitions) if assign(p, live) == self.bridge_id}
        release = [p for p in self.owned if p not in mine]
        claims = sorted(mine)
        results = await self.leases.claim_and_release(self.bridge_id, claims, release, lease_ms=self.lease_ms)
        # Trust a lease for less than its lifetime, measured from before the claim was sent.
        deadline = started + self.lease_ms / 1000 * 0.8
        before = set(self.owned)
        held = {p for p, ok in zip(claims, results, strict=True) if ok}
        self.owned = dict.fromkeys(held, deadline)
        return held - before, before - held

    async def release_all(self) -> None:
        """On shutdown: hand every partition back at once, and leave the member set."""
        await self.leases.leave(self.bridge_id, list(self.owned))
        self.owned = {}

    def channels_in(self, partitions: Iterable[int], channels: Iterable[str]) -> list[str]:
        wanted = set(partitions)
        return [c for c in channels if partition_of(c, self.partitions) in wanted]
