"""Every Redis key mqchat writes, with its type and lifetime. Nothing else formats Redis keys.

All keys start with ``redis.key_prefix`` (``mqchat:`` by default, which must hold no brace). In the
table, ``<name>`` stands for a value and braces are literal: they are Redis Cluster *hash tags*.
Every key whose name has a tag hashes by the tag alone, so keys sharing a tag sit in one hash slot
(one node of a cluster), and every multi-key script or ``MULTI`` touches keys of one tag only:

* ``{p<s>}``: a presence shard (``s`` in ``0..PRESENCE_SHARDS-1``, the user's :func:`presence_shard`):
  a user's connections, aggregate, the shard's lease set and change stream, changed by one script;
* ``{<user>}``: a user's read markers and mention sets, changed together when a marker moves;
* ``{queues}``: the push queues, changed together by the fan-out and the senders' transactions
  (so they share one node: the push pipeline's queues scale with one node, its senders do not).

Keys without a tag are only ever used one at a time (pipelines across them are not atomic and
need not be). ``docs/redis.md`` has the cluster setup and the migration from the previous layout.

=======================================  ======  =============================================================
key                                      type    contents and lifetime
=======================================  ======  =============================================================
``presence:{p<s>}:leases``               zset    ``<user>|<device>|<conn>`` → lease expiry (ms); every live
                                                 connection of the users of shard ``s``; swept when expired
``presence:{p<s>}:conns:<user>``         hash    ``<device>|<conn>`` → ``<status>|<expiry_ms>``; the user's
                                                 live connections (``s`` = the user's presence shard)
``presence:{p<s>}:user:<user>``          hash    ``status``, ``last_seen``, ``ver``: the published aggregate
``presence:{p<s>}:changes``              stream  one entry per aggregate change of shard ``s``'s users, in the
                                                 order they happened; capped at ~100k entries; read by the
                                                 presence publisher
``presence:online:<channel>``            set     members of the channel who are online (for counts)
``read:{<user>}``                        hash    channel → ``<epoch>:<seq>``, the user's read markers
``mentions:{<user>}:<channel>``          zset    seqs of messages in the channel that mention the user (members
                                                 only); expires 30 days after the latest mention
``bridge:members``                       zset    bridge id → heartbeat expiry (ms): the live bridges
``bridge:lease:<partition>``             string  the bridge that owns the partition's channels; expires
                                                 unless renewed (``bridge.lease_ms``)
``push:{queues}:jobs``                   stream  one fan-out job per new message (channel, seq, sender, ...),
                                                 written by the bridge after the acks; capped at ~1M entries
``push:devices:<user>``                  hash    device → JSON push registration (platform, token, app, locale,
                                                 preview, updated_ms); written by the API, a dead token removed
                                                 by the push senders; no expiry (a device removes its own)
``push:muted:<user>``                    set     channels the user muted: no push from them
``push:{queues}:fanout:<job>``          string  the last member (sorted order) a fan-out job has enqueued for,
                                                 so a job taken over from a dead worker resumes; 1 day TTL
``push:{queues}:sends``                  stream  one send job per (message, device), written by the fan-out
                                                 worker, read by the senders; capped at ~1M entries
``push:{queues}:retry``                  zset    send jobs waiting for a retry (JSON) → due time (ms)
``push:{queues}:dlq``                    stream  dead letters: send jobs given up on, with the reason; capped
                                                 at ~100k entries; inspect with XRANGE
``objects:thumbnails``                   stream  one job per completed image upload (``upload`` id), written by the
                                                 API, read by the thumbnail worker; capped at ~100k entries
``slow:<channel>:<user>``                string  the cmid of the user's last send in a slow-mode channel; expires
                                                 after the channel's ``slow_mode_s`` (bridge)
``messages:log``                         stream  one "message changed" notice per new, edited or deleted message
                                                 (op, id, channel, epoch, seq; no text), written by the bridge
                                                 after the acks; read by the search indexer's consumer group;
                                                 capped at ~1M entries (``MESSAGE_LOG_MAXLEN``)
``auth:family:<family>``                 hash    one device login's refresh tokens: ``user``, ``device``,
                                                 ``current`` (SHA-256 of the only valid refresh token);
                                                 expires ``auth.refresh_ttl_s`` after its last use; deleted
                                                 = the family is revoked (``mqchat/storage/tokens.py``)
``auth:families:<user>``                 hash    family → device: the user's live logins (for logout-all)
``auth:revoked:<user>``                  hash    device (or ``*``: every device) → time (s, float): access
                                                 tokens issued before it are revoked; expires after the
                                                 longest access token lifetime
``auth:revocations``                     stream  one entry per revocation (user, device, at), read by every
                                                 embedded broker to close those connections; capped at ~10k
``rl:<rule>:<subject>``                  string  a rate limit's theoretical arrival time (ms) for one subject
                                                 (an IP address, a username); expires when the allowance is
                                                 whole again (``mqchat/ratelimit.py``)
``acl:invalidations``                     stream  one entry per directory change that can change access (scope
                                                 user / channel / server, id, server), written by the process
                                                 that made it, read by every process that caches access
                                                 decisions (``mqchat/storage/invalidations.py``); capped at ~100k
``leader:<name>``                        hash    ``owner``, ``token`` (fencing token, +1 per new leader),
                                                 ``expires_ms``: the lease of a singleton job (``presence`` =
                                                 the workers' presence publisher and lease sweeper); never
                                                 deleted, so tokens keep increasing (``mqchat/storage/leases.py``)
=======================================  ======  =============================================================

Leases are per connection (``conn`` is made by the broker at CONNECT), so a late disconnect of an
old connection can never remove a newer one; a crashed broker's leases expire on their own.
"""

from __future__ import annotations

from binascii import crc_hqx
from dataclasses import dataclass

#: Cap of the presence change stream.
CHANGES_MAXLEN = 100_000
#: Consumer group of the presence publisher.
PRESENCE_GROUP = "presence-publisher"
#: Cap of the fan-out job stream (jobs are consumed within seconds; the cap bounds a stalled worker).
PUSH_JOBS_MAXLEN = 1_000_000
#: Consumer group of the push fan-out worker (on ``push:jobs``).
FANOUT_GROUP = "push-fanout"
#: Consumer group of the push senders (on ``push:sends``).
SENDERS_GROUP = "push-senders"
#: Cap of the push send stream.
PUSH_SENDS_MAXLEN = 1_000_000
#: Cap of the push dead-letter stream.
PUSH_DLQ_MAXLEN = 100_000
#: Lifetime of a fan-out job's progress cursor (seconds).
FANOUT_PROGRESS_TTL_S = 86_400
#: Cap of the thumbnail job stream.
THUMBNAIL_JOBS_MAXLEN = 100_000
#: Consumer group of the thumbnail worker (on ``objects:thumbnails``).
THUMBNAIL_GROUP = "thumbnailer"
#: Mentions unread for this long stop counting (their key expires with the latest mention's age).
MENTIONS_TTL_S = 30 * 86_400


#: Cap of the message log (``messages:log``): about 1M notices, ~100 bytes each. An indexer stopped
#: for longer than it takes the bridge to write this many loses entries: rebuild with ``mqchat reindex``.
MESSAGE_LOG_MAXLEN = 1_000_000
#: Consumer group of the search indexer (on ``messages:log``).
SEARCH_GROUP = "search-indexer"
#: Cap of the revocation stream (brokers read it live; the cap bounds it, never a reader).
REVOCATIONS_MAXLEN = 10_000


#: Prefix of every key unless ``redis.key_prefix`` says otherwise.
DEFAULT_PREFIX = "mqchat:"


#: Presence shards: each has its own lease set and change stream, with the connections and aggregates
#: of its users under the same hash tag (one Redis Cluster slot per shard). Changing it moves users to
#: other shards: only with every mqchat process stopped, and presence is lost (it rebuilds as clients
#: reconnect).
PRESENCE_SHARDS = 16


def presence_shard(user: str) -> int:
    """The presence shard of ``user``: CRC-16 (the one Redis Cluster uses) of the id, modulo
    :data:`PRESENCE_SHARDS`."""
    return crc_hqx(user.encode(), 0) % PRESENCE_SHARDS


@dataclass(frozen=True, slots=True)
class Keys:
    """Key builder for one prefix.

    Raises:
        ValueError: the prefix holds a brace (it would become, or break, a hash tag).
    """

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError(f"redis key prefix {self.prefix!r} must not contain braces (Redis Cluster hash tags)")

    # --- presence (tag {p<s>}: one presence shard) ----------------------------------------------

    def presence_shard_prefix(self, shard: int) -> str:
        """The common start of every key of presence shard ``shard`` (the expiry script derives a
        user's keys from it)."""
        return f"{self.prefix}presence:{{p{shard}}}:"

    def leases(self, shard: int) -> str:
        return f"{self.presence_shard_prefix(shard)}leases"

    def changes(self, shard: int) -> str:
        return f"{self.presence_shard_prefix(shard)}changes"

    def conns(self, user: str) -> str:
        return f"{self.presence_shard_prefix(presence_shard(user))}conns:{user}"

    def user_presence(self, user: str) -> str:
        return f"{self.presence_shard_prefix(presence_shard(user))}user:{user}"

    def online(self, channel: str) -> str:
        return f"{self.prefix}presence:online:{channel}"

    # --- read state (tag {<user>}) --------------------------------------------------------------

    def read(self, user: str) -> str:
        return f"{self.prefix}read:{{{user}}}"

    def mentions(self, user: str, channel: str) -> str:
        return f"{self.prefix}mentions:{{{user}}}:{channel}"

    # --- one key at a time ------------------------------------------------------------------------

    def slow_mode(self, channel: str, user: str) -> str:
        return f"{self.prefix}slow:{channel}:{user}"

    @property
    def message_log(self) -> str:
        return f"{self.prefix}messages:log"

    def refresh_family(self, family: str) -> str:
        return f"{self.prefix}auth:family:{family}"

    def refresh_families(self, user: str) -> str:
        return f"{self.prefix}auth:families:{user}"

    def revoked(self, user: str) -> str:
        return f"{self.prefix}auth:revoked:{user}"

    @property
    def revocations(self) -> str:
        return f"{self.prefix}auth:revocations"

    def rate(self, rule: str, subject: str) -> str:
        return f"{self.prefix}rl:{rule}:{subject}"

    @property
    def bridges(self) -> str:
        return f"{self.prefix}bridge:members"

    def lease(self, partition: int) -> str:
        return f"{self.prefix}bridge:lease:{partition}"

    def push_devices(self, user: str) -> str:
        return f"{self.prefix}push:devices:{user}"

    def push_muted(self, user: str) -> str:
        return f"{self.prefix}push:muted:{user}"

    @property
    def thumbnail_jobs(self) -> str:
        return f"{self.prefix}objects:thumbnails"

    # --- push queues (tag {queues}) -------------------------------------------------------------

    @property
    def push_jobs(self) -> str:
        return f"{self.prefix}push:{{queues}}:jobs"

    def push_fanout_progress(self, job: str) -> str:
        return f"{self.prefix}push:{{queues}}:fanout:{job}"

    @property
    def push_sends(self) -> str:
        return f"{self.prefix}push:{{queues}}:sends"

    @property
    def push_retry(self) -> str:
        return f"{self.prefix}push:{{queues}}:retry"

    @property
    def push_dlq(self) -> str:
        return f"{self.prefix}push:{{queues}}:dlq"

    @property
    def acl_invalidations(self) -> str:
        return f"{self.prefix}acl:invalidations"

    def leader(self, name: str) -> str:
        return f"{self.prefix}leader:{name}"


#: Cap of the access invalidation stream (readers follow it live and drop everything after a gap).
INVALIDATIONS_MAXLEN = 100_000
