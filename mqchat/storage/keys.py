"""Every Redis key mqchat writes, with its type and lifetime. Nothing else formats Redis keys.

All keys start with ``redis.key_prefix`` (``mqchat:`` by default).

=======================================  ======  =============================================================
key                                      type    contents and lifetime
=======================================  ======  =============================================================
``presence:leases``                      zset    ``{user}|{device}|{conn}`` → lease expiry (ms); every live
                                                 connection of every broker; swept when expired
``presence:conns:{user}``                hash    ``{device}|{conn}`` → ``{status}|{expiry_ms}``; the user's
                                                 live connections
``presence:user:{user}``                 hash    ``status``, ``last_seen``, ``ver``: the published aggregate
``presence:changes``                     stream  one entry per aggregate change, in the order they happened;
                                                 capped at ~100k entries; read by the presence publisher
``presence:online:{channel}``            set     members of the channel who are online (for counts)
``read:{user}``                          hash    channel → ``{epoch}:{seq}``, the user's read markers
``mentions:{user}:{channel}``            zset    seqs of messages in the channel that mention the user
``push:jobs``                            stream  one fan-out job per new message (channel, seq, sender, ...),
                                                 written by the bridge after the acks; capped at ~1M entries
=======================================  ======  =============================================================

Leases are per connection (``conn`` is made by the broker at CONNECT), so a late disconnect of an
old connection can never remove a newer one; a crashed broker's leases expire on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Cap of the presence change stream.
CHANGES_MAXLEN = 100_000
#: Consumer group of the presence publisher.
PRESENCE_GROUP = "presence-publisher"
#: Cap of the fan-out job stream (jobs are consumed within seconds; the cap bounds a stalled worker).
PUSH_JOBS_MAXLEN = 1_000_000


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder for one prefix."""

    prefix: str = "mqchat:"

    @property
    def leases(self) -> str:
        return f"{self.prefix}presence:leases"

    def conns(self, user: str) -> str:
        return f"{self.prefix}presence:conns:{user}"

    def user_presence(self, user: str) -> str:
        return f"{self.prefix}presence:user:{user}"

    @property
    def changes(self) -> str:
        return f"{self.prefix}presence:changes"

    def online(self, channel: str) -> str:
        return f"{self.prefix}presence:online:{channel}"

    def read(self, user: str) -> str:
        return f"{self.prefix}read:{user}"

    def mentions(self, user: str, channel: str) -> str:
        return f"{self.prefix}mentions:{user}:{channel}"

    @property
    def push_jobs(self) -> str:
        return f"{self.prefix}push:jobs"
