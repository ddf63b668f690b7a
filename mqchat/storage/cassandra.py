"""Cassandra / ScyllaDB backends: the message store for more than one machine.

The schema is ``mqchat/storage/cql/schema.cql`` (its comments give the partition-size arithmetic);
docs/storage-cassandra.md explains the design. In short:

* **Messages** live in partitions of ``(channel_id, epoch, bucket)`` with ``bucket = (seq-1) //
  BUCKET_SIZE``. seq is gap-free, so the partitions that hold any seq range are *computed*: history
  paging reads exactly the buckets that contain the page and never probes an empty one.
* **Commit point.** Each append of one channel's messages into one bucket is a single-partition
  conditional batch: ``UPDATE messages SET last_seq = <last> ... IF last_seq = <first-1>`` (the
  bucket's static column) plus the ``INSERT`` of every row. Applied whole or not at all, and two
  writers can never both take the same seqs, so message rows exist only once committed. A batch
  that crosses a bucket boundary commits bucket by bucket, in seq order: a failure leaves a
  committed *prefix* (never a gap), and the same batch retried resumes after it.
* **Ambiguous failures** (``WriteTimeout`` of a CAS: the write may or may not have happened) are
  reported as :class:`StorageUnavailable`. The caller retries the *same* batch; when the condition
  then fails because the bucket already holds our last seq, the stored rows are compared with
  ours (Snowflake id and every field): ours means the earlier attempt committed and the retry
  succeeds, anything else is a :class:`Conflict`. Every plain write writes the same values for the same key, so it is
  idempotent, and the position hint is written ``USING TIMESTAMP (epoch << 40 | last_seq)`` so a
  late write cannot move it backwards.
* **Idempotency** rows ``(channel, sender, cmid) -> (epoch, seq, id)`` are written before the
  commit and trusted only when the message row they point to exists with the same id, sender
  and cmid.

Not atomic across channels or buckets: one batch is committed per (channel, bucket) partition, in
parallel across channels. If some commit and another fails, the failure is raised (nothing is
acked), the committed ones are found by ``find_cmids`` when the senders retry, and none is lost
or duplicated. docs/storage-cassandra.md discusses it.

Driver futures are bridged to asyncio with callbacks (``loop.call_soon_threadsafe``); nothing
blocks the event loop except ``open``/``close``, which run the driver's blocking calls in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from cassandra import (
    ConsistencyLevel,
    CoordinationFailure,
    OperationTimedOut,
    ReadTimeout,
    Unavailable,
    WriteTimeout,
)
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable
from cassandra.connection import ConnectionException
from cassandra.policies import (
    ConstantSpeculativeExecutionPolicy,
    DCAwareRoundRobinPolicy,
    ExponentialReconnectionPolicy,
    RetryPolicy,
    TokenAwarePolicy,
)
from cassandra.protocol import IsBootstrappingErrorMessage, OverloadedErrorMessage
from cassandra.query import BatchStatement, BatchType, PreparedStatement, dict_factory

from mqchat.config import CassandraSettings
from mqchat.errors import Conflict, StorageError, StorageUnavailable
from mqchat.ids import new_random_id
from mqchat.storage.base import (
    EMPTY_POSITION,
    Channel,
    ChannelKind,
    CmidKey,
    Directory,
    HistoryPage,
    MessageStore,
    Position,
    StoredMessage,
    User,
    direct_key,
)
from mqchat.storage.cql import load_schema

logger = logging.getLogger(__name__)

#: Messages per partition (see schema.cql for the arithmetic). Part of the data layout: changing it
#: for a keyspace that holds messages needs a data migration.
BUCKET_SIZE: Final = 4096

#: Most buckets the position walk follows past the hint before giving up (the hint lags by at most
#: one append, and one append spans at most a few buckets).
_WALK_LIMIT: Final = 64

Row = dict[str, Any]

#: Every statement the backends run, by name. Prepared once per session; the CQL stand-in used by
#: the tests (tests/cassandra_standin) answers exactly these.
STATEMENTS: Final[Mapping[str, str]] = MappingProxyType({
    # messages
    "head_get": "SELECT epoch, last_seq FROM channel_positions WHERE channel_id = ?",
    "head_set": "UPDATE channel_positions USING TIMESTAMP ? SET epoch = ?, last_seq = ? WHERE channel_id = ?",
    "bucket_last": "SELECT last_seq FROM messages WHERE channel_id = ? AND epoch = ? AND bucket = ? LIMIT 1",
    "bucket_cas": "UPDATE messages SET last_seq = ? WHERE channel_id = ? AND epoch = ? AND bucket = ? "
                  "IF last_seq = ?",
    "message_put": "INSERT INTO messages (channel_id, epoch, bucket, seq, id, sender, device, cmid, ts, kind, body, "
                   "target, emoji, op, reply_to, thread, count_seq) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    "message_range": "SELECT seq, id, sender, device, cmid, ts, kind, body, target, emoji, op, reply_to, thread, "
                     "count_seq FROM messages "
                     "WHERE channel_id = ? AND epoch = ? AND bucket = ? AND seq >= ? AND seq <= ?",
    "message_erase": "UPDATE messages SET body = ? WHERE channel_id = ? AND epoch = ? AND bucket = ? AND seq = ?",
    "cmid_get": "SELECT epoch, seq, id FROM message_cmids WHERE channel_id = ? AND sender = ? AND cmid = ?",
    "cmid_put": "INSERT INTO message_cmids (channel_id, sender, cmid, epoch, seq, id) VALUES (?, ?, ?, ?, ?, ?)",
    # directory
    "user_put": "INSERT INTO users (user_id, username, password_hash, created_ms) VALUES (?, ?, ?, ?)",
    "user_get": "SELECT user_id FROM users WHERE user_id = ?",
    "user_claim": "INSERT INTO users_by_name (username_key, user_id, username, password_hash, created_ms) "
                  "VALUES (?, ?, ?, ?, ?) IF NOT EXISTS",
    "user_by_name": "SELECT user_id, username, password_hash, created_ms FROM users_by_name WHERE username_key = ?",
    "channel_put": "INSERT INTO channels (channel_id, kind, name, created_by, created_ms) VALUES (?, ?, ?, ?, ?)",
    "channel_get": "SELECT channel_id, kind, name, created_by, created_ms FROM channels WHERE channel_id = ?",
    "direct_claim": "INSERT INTO direct_channels (pair_key, channel_id) VALUES (?, ?) IF NOT EXISTS",
    "member_put": "INSERT INTO members_by_channel (channel_id, user_id, joined_ms) VALUES (?, ?, ?)",
    "member_claim": "INSERT INTO members_by_channel (channel_id, user_id, joined_ms) VALUES (?, ?, ?) IF NOT EXISTS",
    "member_drop": "DELETE FROM members_by_channel WHERE channel_id = ? AND user_id = ? IF EXISTS",
    "member_get": "SELECT user_id FROM members_by_channel WHERE channel_id = ? AND user_id = ?",
    "members_of": "SELECT user_id FROM members_by_channel WHERE channel_id = ?",
    "user_channel_put": "INSERT INTO channels_by_user (user_id, channel_id) VALUES (?, ?)",
    "user_channel_drop": "DELETE FROM channels_by_user WHERE user_id = ? AND channel_id = ?",
    "user_channels": "SELECT channel_id FROM channels_by_user WHERE user_id = ?",
    # migrations ledger
    "migrations_done": "SELECT version FROM schema_migrations",
    "migration_record": "INSERT INTO schema_migrations (version, name, applied_ms) VALUES (?, ?, ?)",
})

#: Conditional (LWT) statements: never idempotent in the driver's sense (a re-sent CAS answers
#: "not applied"), so never retried by the driver nor sent speculatively.
_CONDITIONAL: Final = frozenset({"bucket_cas", "user_claim", "direct_claim", "member_claim", "member_drop"})
_READS: Final = frozenset(name for name, cql in STATEMENTS.items() if cql.startswith("SELECT"))

#: Driver errors after which the same request may well succeed later. A WriteTimeout means the
#: write may or may not have happened; callers must make the retry safe (see the module docstring).
_TEMPORARY: Final = (
    Unavailable, WriteTimeout, ReadTimeout, CoordinationFailure, OperationTimedOut, NoHostAvailable,
    ConnectionException, OverloadedErrorMessage, IsBootstrappingErrorMessage,
)


def bucket_of(seq: int, bucket_size: int = BUCKET_SIZE) -> int:
    """The bucket holding ``seq`` (seqs start at 1)."""
    return (seq - 1) // bucket_size


def head_timestamp(epoch: int, last_seq: int) -> int:
    """Write timestamp of a position hint: grows with (epoch, seq), so the newest position wins."""
    return (epoch << 40) | last_seq


def map_error(exc: BaseException, what: str) -> StorageError:
    """Our error for a driver error: temporary faults become :class:`StorageUnavailable`."""
    if isinstance(exc, StorageError):
        return exc
    text = f"cassandra {what}: {type(exc).__name__}: {exc}"
    if isinstance(exc, _TEMPORARY):
        return StorageUnavailable(text)
    return StorageError(text)


class MqchatRetryPolicy(RetryPolicy):  # type: ignore[misc]
    """Retries the driver may do on its own: only those that cannot change an outcome.

    * read timeout with enough replicas but no data: once, same host (the data replica was slow);
    * unavailable: once, on the next host (its view of the ring may differ);
    * connection error on an idempotent statement: once, on the next host;
    * write timeout: never. The write may have happened; the store resolves that itself when its
      caller retries the whole append (see :class:`CassandraMessageStore`).
    """

    def on_read_timeout(self, query: Any, consistency: Any, required_responses: int,
                        received_responses: int, data_retrieved: bool, retry_num: int) -> tuple[Any, Any]:
        if retry_num == 0 and received_responses >= required_responses and not data_retrieved:
            return self.RETRY, consistency
        return self.RETHROW, None

    def on_write_timeout(self, query: Any, consistency: Any, write_type: Any, required_responses: int,
                         received_responses: int, retry_num: int) -> tuple[Any, Any]:
        return self.RETHROW, None

    def on_unavailable(self, query: Any, consistency: Any, required_replicas: int, alive_replicas: int,
                       retry_num: int) -> tuple[Any, Any]:
        return (self.RETRY_NEXT_HOST, None) if retry_num == 0 else (self.RETHROW, None)

    def on_request_error(self, query: Any, consistency: Any, error: Exception, retry_num: int) -> tuple[Any, Any]:
        if retry_num == 0 and getattr(query, "is_idempotent", False):
            return self.RETRY_NEXT_HOST, None
        return self.RETHROW, None


@dataclass(frozen=True, slots=True)
class ClusterTuning:
    """Driver options that are not deployment settings.

    Args:
        metadata: keep schema and token metadata. Token-aware routing needs both, so production
            keeps them; the tests' CQL stand-in serves neither and turns them off.
        reconnect_base_s: first delay of the exponential reconnection to a lost node.
        reconnect_max_s: its cap.
        fetch_size: rows per page of a read.
    """

    metadata: bool = True
    reconnect_base_s: float = 1.0
    reconnect_max_s: float = 30.0
    fetch_size: int = 1000


def _consistency(name: str) -> int:
    return int(getattr(ConsistencyLevel, name))


class CqlSession:
    """One driver ``Cluster`` and ``Session``, our prepared statements, and an asyncio face.

    Args:
        settings: the ``cassandra`` settings section.
        tuning: driver options chosen by code (tests), not by deployment.
    """

    def __init__(self, settings: CassandraSettings, tuning: ClusterTuning = ClusterTuning()) -> None:
        self.settings = settings
        self.tuning = tuning
        self._cluster: Cluster | None = None
        self._session: Any = None
        self._prepared: dict[str, PreparedStatement] = {}
        self._closed = False

    def _make_cluster(self) -> Cluster:
        s = self.settings
        consistency = _consistency(s.consistency)
        serial = ConsistencyLevel.LOCAL_SERIAL if s.consistency.startswith("LOCAL_") else ConsistencyLevel.SERIAL

        def profile(speculative: bool) -> ExecutionProfile:
            # Token-aware over DC-aware: requests go to a replica of their partition in the local DC
            # (no remote DC hosts at all: LOCAL_* consistency must not cross the WAN).
            spec = (ConstantSpeculativeExecutionPolicy(delay=s.speculative_delay_s, max_attempts=1)
                    if speculative and s.speculative_delay_s > 0 else None)
            return ExecutionProfile(
                load_balancing_policy=TokenAwarePolicy(
                    DCAwareRoundRobinPolicy(local_dc=s.local_dc or "", used_hosts_per_remote_dc=0),
                    shuffle_replicas=True,
                ),
                retry_policy=MqchatRetryPolicy(),
                consistency_level=consistency,
                serial_consistency_level=serial,
                request_timeout=s.request_timeout_s,
                row_factory=dict_factory,
                speculative_execution_policy=spec,
            )

        return Cluster(
            contact_points=list(s.hosts),
            port=s.port,
            protocol_version=s.protocol_version,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile(False), "reads": profile(True)},
            schema_metadata_enabled=self.tuning.metadata,
            token_metadata_enabled=self.tuning.metadata,
            connect_timeout=min(5.0, s.request_timeout_s),
            control_connection_timeout=s.request_timeout_s,
            reconnection_policy=ExponentialReconnectionPolicy(self.tuning.reconnect_base_s,
                                                              self.tuning.reconnect_max_s),
            idle_heartbeat_interval=30,
        )

    async def open(self, keyspace: str | None, names: Collection[str] = ()) -> CqlSession:
        """Connect (optionally to ``keyspace``) and prepare the statements ``names``."""
        cluster = self._make_cluster()
        self._cluster = cluster
        try:
            self._session = await asyncio.to_thread(cluster.connect, keyspace)
        except Exception as exc:
            await asyncio.to_thread(cluster.shutdown)
            raise map_error(exc, "connect") from exc
        await self.prepare(names)
        return self

    async def prepare(self, names: Collection[str]) -> None:
        """Prepare statements of :data:`STATEMENTS`, concurrently (the driver's prepare blocks, so
        each runs in a worker thread; this happens once, at open)."""
        wanted = [n for n in names if n not in self._prepared]
        results = await asyncio.gather(*(asyncio.to_thread(self._session.prepare, STATEMENTS[n]) for n in wanted),
                                       return_exceptions=True)
        for name, result in zip(wanted, results, strict=True):
            if isinstance(result, BaseException):
                raise map_error(result, f"prepare {name}") from result
            result.is_idempotent = name not in _CONDITIONAL
            self._prepared[name] = result

    def _bound(self, name: str, params: Sequence[Any]) -> Any:
        return self._prepared[name].bind(params)

    async def run(self, name: str, params: Sequence[Any]) -> list[Row]:
        """Execute one prepared statement; every page of its rows."""
        profile = "reads" if name in _READS else EXEC_PROFILE_DEFAULT
        statement = self._bound(name, params)
        statement.fetch_size = self.tuning.fetch_size
        return await self._execute(statement, profile, name)

    async def batch(self, items: Sequence[tuple[str, Sequence[Any]]], what: str) -> list[Row]:
        """One logged batch of prepared statements (conditional when one of them is)."""
        batch = BatchStatement(batch_type=BatchType.LOGGED)
        for name, params in items:
            batch.add(self._bound(name, params))
        batch.is_idempotent = not any(name in _CONDITIONAL for name, _ in items)
        return await self._execute(batch, EXEC_PROFILE_DEFAULT, what)

    async def ddl(self, cql: str) -> None:
        """Run one schema statement (migrations only; DDL is not prepared)."""
        await self._execute(cql, EXEC_PROFILE_DEFAULT, "schema change")

    async def _execute(self, statement: Any, profile: Any, what: str) -> list[Row]:
        if self._session is None or self._closed:
            raise StorageError("cassandra session is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Row]] = loop.create_future()
        rows: list[Row] = []
        try:
            response = self._session.execute_async(statement, execution_profile=profile)
        except Exception as exc:
            raise map_error(exc, what) from exc

        def settle(result: list[Row] | None, error: BaseException | None) -> None:
            if fut.done():
                return  # the awaiting task was cancelled
            if error is not None:
                fut.set_exception(map_error(error, what))
            else:
                fut.set_result(result or [])

        def on_page(page: Any) -> None:
            # Runs on a driver thread. Pages of a paged read arrive one by one through here.
            if page:
                rows.extend(page)
            if response.has_more_pages:
                response.start_fetching_next_page()
            else:
                loop.call_soon_threadsafe(settle, rows, None)

        def on_error(exc: BaseException) -> None:
            loop.call_soon_threadsafe(settle, None, exc)

        response.add_callbacks(on_page, on_error)
        return await fut

    async def close(self) -> None:
        """Shut the driver down (in a thread: it joins its own threads). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._cluster is not None:
            await asyncio.to_thread(self._cluster.shutdown)


_MESSAGE_STATEMENTS: Final = ("head_get", "head_set", "bucket_last", "bucket_cas", "message_put",
                              "message_range", "message_erase", "cmid_get", "cmid_put")
_DIRECTORY_STATEMENTS: Final = ("user_put", "user_get", "user_claim", "user_by_name", "channel_put", "channel_get",
                                "direct_claim", "member_put", "member_claim", "member_drop", "member_get",
                                "members_of", "user_channel_put", "user_channel_drop", "user_channels")


async def _gather(*aws: Any) -> list[Any]:
    """Run concurrently; when any fails, wait for all (no stray writes behind our back), then raise
    the most telling error: a Conflict over a temporary fault over anything else."""
    results = await asyncio.gather(*aws, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        for kind in (Conflict, StorageUnavailable, BaseException):
            for e in errors:
                if isinstance(e, kind):
                    raise e
    return list(results)


def _runs(batch: Sequence[StoredMessage]) -> dict[str, list[list[StoredMessage]]]:
    """Split a batch into, per channel, runs of consecutive seqs of one epoch (pure).

    Raises:
        Conflict: the batch contradicts itself (a gap, a repeated seq, an epoch going back, a cmid
            twice): refused before anything is written.
    """
    runs: dict[str, list[list[StoredMessage]]] = {}
    seen: set[CmidKey] = set()
    for m in batch:
        if m.cmid_key in seen:
            raise Conflict(f"duplicate cmid {m.cmid_key} in one batch")
        seen.add(m.cmid_key)
        if m.seq < 1 or m.epoch < 1:
            raise Conflict(f"channel {m.channel}: seq {m.epoch}/{m.seq} is not positive")
        channel_runs = runs.setdefault(m.channel, [])
        if channel_runs:
            prev = channel_runs[-1][-1]
            if (m.epoch, m.seq) == (prev.epoch, prev.seq + 1):
                channel_runs[-1].append(m)
                continue
            if not (m.epoch > prev.epoch and m.seq == 1):
                raise Conflict(f"channel {m.channel}: seq {m.epoch}/{m.seq} does not follow {prev.epoch}/{prev.seq}")
        channel_runs.append([m])
    return runs


def _message(channel: str, epoch: int, row: Row) -> StoredMessage:
    # Rows written before migration 2 have no count_seq: every one of them was a text, so it counts.
    count = row.get("count_seq")
    return StoredMessage(id=row["id"], channel=channel, seq=row["seq"], epoch=epoch, sender=row["sender"],
                         device=row["device"], cmid=row["cmid"], ts=row["ts"], kind=row["kind"], body=row["body"] or "",
                         target=row.get("target"), emoji=row.get("emoji"), op=row.get("op"),
                         reply_to=row.get("reply_to"), thread=row.get("thread"),
                         count_seq=row["seq"] if count is None else int(count))


class CassandraMessageStore:
    """:class:`MessageStore` on a Cassandra or ScyllaDB keyspace migrated with :func:`migrate`.

    Args:
        settings: the ``cassandra`` settings section.
        tuning: driver options chosen by code (tests turn metadata off for the stand-in).
        bucket_size: messages per partition. Leave the default: it is part of the data layout, and
            the tests set a small one only to cross bucket boundaries often.
    """

    def __init__(self, settings: CassandraSettings, *, tuning: ClusterTuning = ClusterTuning(),
                 bucket_size: int = BUCKET_SIZE) -> None:
        if bucket_size < 1:
            raise ValueError("bucket_size must be positive")
        self._cql = CqlSession(settings, tuning)
        self._bucket_size = bucket_size

    async def open(self) -> CassandraMessageStore:
        """Connect to the keyspace and prepare the statements."""
        await self._cql.open(self._cql.settings.keyspace, _MESSAGE_STATEMENTS)
        return self

    def _bucket(self, seq: int) -> int:
        return bucket_of(seq, self._bucket_size)

    # --- reads ---------------------------------------------------------------------------------

    async def _bucket_last(self, channel: str, epoch: int, bucket: int) -> int | None:
        rows = await self._cql.run("bucket_last", (channel, epoch, bucket))
        value = rows[0]["last_seq"] if rows else None
        return int(value) if value is not None else None

    async def _position(self, channel: str) -> Position:
        """The exact position: the hint, then forward through the buckets' committed ``last_seq``."""
        rows = await self._cql.run("head_get", (channel,))
        if not rows or rows[0]["epoch"] is None:
            epoch, last = EMPTY_POSITION.epoch, EMPTY_POSITION.last_seq
        else:
            epoch, last = int(rows[0]["epoch"]), int(rows[0]["last_seq"] or 0)
        for _ in range(_WALK_LIMIT):
            found = await self._bucket_last(channel, epoch, self._bucket(last + 1))
            if found is None or found <= last:
                tail = await self._range(channel, epoch, last, last) if last else []
                return Position(epoch, last, tail[0].count_seq if tail else 0)
            last = found
        raise StorageError(f"channel {channel}: position walk did not end after {_WALK_LIMIT} buckets")

    async def positions(self, channels: Collection[str]) -> dict[str, Position]:
        wanted = list(dict.fromkeys(channels))
        found = await _gather(*(self._position(c) for c in wanted))
        return dict(zip(wanted, found, strict=True))

    async def _range(self, channel: str, epoch: int, lo: int, hi: int) -> list[StoredMessage]:
        """Messages ``lo..hi`` (inclusive, all committed), ascending: one read per bucket, in parallel."""
        if hi < lo:
            return []
        buckets = range(self._bucket(lo), self._bucket(hi) + 1)
        parts = await _gather(*(
            self._cql.run("message_range", (channel, epoch, b, max(lo, b * self._bucket_size + 1),
                                            min(hi, (b + 1) * self._bucket_size)))
            for b in buckets
        ))
        messages = [_message(channel, epoch, row) for part in parts for row in part]
        messages.sort(key=lambda m: m.seq)
        return messages

    async def _resolve(self, key: CmidKey) -> StoredMessage | None:
        rows = await self._cql.run("cmid_get", key)
        if not rows:
            return None
        epoch, seq, mid = int(rows[0]["epoch"]), int(rows[0]["seq"]), int(rows[0]["id"])
        stored = await self._range(key[0], epoch, seq, seq)
        # Written before the commit: only the committed message row it names makes it true.
        if stored and (stored[0].id, stored[0].sender, stored[0].cmid) == (mid, key[1], key[2]):
            return stored[0]
        return None

    async def find_cmids(self, keys: Collection[CmidKey]) -> dict[CmidKey, StoredMessage]:
        wanted = list(dict.fromkeys(keys))
        found = await _gather(*(self._resolve(k) for k in wanted))
        return {k: m for k, m in zip(wanted, found, strict=True) if m is not None}

    async def history(
        self, channel: str, *, before: int | None = None, after: int | None = None, limit: int = 50,
    ) -> HistoryPage:
        pos = await self._position(channel)
        lo = max(1, after + 1) if after is not None else 1
        hi = min(pos.last_seq, before - 1) if before is not None else pos.last_seq
        count = max(0, hi - lo + 1)
        if count == 0 or limit <= 0:
            return HistoryPage([], pos.epoch, pos.last_seq, count > 0)
        # seq is gap-free, so the page's seqs, and the buckets holding them, are known in advance.
        page_lo, page_hi = (lo, min(hi, lo + limit - 1)) if after is not None else (max(lo, hi - limit + 1), hi)
        messages = await self._range(channel, pos.epoch, page_lo, page_hi)
        return HistoryPage(messages, pos.epoch, pos.last_seq, count > limit)

    async def _tail(self, channel: str, lo: int) -> list[StoredMessage]:
        """Every event from ``lo`` to the end of the current epoch.

        Events naming a message always follow it, so this holds everything about the messages at
        ``lo`` and later. It reads the tail of the channel, not an index: fine for recent
        messages, costly for old ones in long channels (see docs/storage-cassandra.md).
        """
        pos = await self._position(channel)
        return await self._range(channel, pos.epoch, max(1, lo), pos.last_seq)

    async def related(self, wanted: Mapping[str, Collection[int]]) -> dict[str, list[StoredMessage]]:
        asked = {c: set(seqs) for c, seqs in wanted.items() if seqs}
        tails = await _gather(*(self._tail(c, min(seqs)) for c, seqs in asked.items()))
        found = {c: [m for m in tail if m.seq in asked[c] or m.target in asked[c] or m.thread in asked[c]]
                 for c, tail in zip(asked, tails, strict=True)}
        return {c: found.get(c, []) for c in wanted}

    async def thread(self, channel: str, root: int, *, after: int = 0, limit: int = 50,
                     ) -> tuple[list[StoredMessage], bool]:
        chosen = [m for m in await self._tail(channel, max(root, after) + 1) if m.thread == root]
        return chosen[:limit], len(chosen) > limit

    async def pin_events(self, channel: str) -> list[StoredMessage]:
        return [m for m in await self._tail(channel, 1) if m.kind in ("pin", "unpin")]

    async def counts_at(self, points: Collection[tuple[str, int]]) -> dict[tuple[str, int], int]:
        wanted = list(dict.fromkeys(points))
        positions = await self.positions({c for c, _ in wanted})

        async def one(channel: str, seq: int) -> int:
            if seq <= 0:
                return 0
            found = await self._range(channel, positions[channel].epoch, seq, seq)
            return found[0].count_seq if found else 0

        counts = await _gather(*(one(c, seq) for c, seq in wanted))
        return dict(zip(wanted, counts, strict=True))

    async def _erase(self, channel: str, deletes: list[StoredMessage]) -> None:
        """After the commit: blank the body of each deleted message and of its edits. Idempotent;
        a retry of the same batch (after a lost answer) runs it again."""
        for d in deletes:
            assert d.target is not None
            doomed = [m for m in await self._range(channel, d.epoch, d.target, d.seq)
                      if m.seq == d.target or (m.kind == "edit" and m.target == d.target)]
            await _gather(*(self._cql.run("message_erase", ("", channel, m.epoch, self._bucket(m.seq), m.seq))
                            for m in doomed))

    # --- append --------------------------------------------------------------------------------

    async def append(self, messages: Sequence[StoredMessage]) -> None:
        if not messages:
            return
        runs = _runs(messages)
        # 1. A cmid already committed for another message: refuse before writing anything.
        batch = list(messages)
        committed = await self.find_cmids([m.cmid_key for m in batch])
        for m in batch:
            other = committed.get(m.cmid_key)
            if other is not None and other.id != m.id:
                raise Conflict(f"cmid {m.cmid_key} is already stored as {other.epoch}/{other.seq}")
        # 2. Idempotency rows (same values on a retry), then 3. the commits, per channel in parallel.
        await _gather(*(self._cql.run("cmid_put", (m.channel, m.sender, m.cmid, m.epoch, m.seq, m.id))
                        for m in batch))
        await _gather(*(self._commit_channel(channel, channel_runs) for channel, channel_runs in runs.items()))

    async def _commit_channel(self, channel: str, runs: list[list[StoredMessage]]) -> None:
        for run in runs:
            first = run[0]
            if first.seq == 1:
                await self._open_epoch(channel, first.epoch)
            segments: dict[int, list[StoredMessage]] = {}
            for m in run:
                segments.setdefault(self._bucket(m.seq), []).append(m)
            for i, (bucket, segment) in enumerate(segments.items()):
                await self._commit_segment(channel, bucket, segment, check_previous=i == 0)
            last = run[-1]
            await self._cql.run("head_set", (head_timestamp(last.epoch, last.seq), last.epoch, last.seq, channel))
            deletes = [m for m in run if m.kind == "delete" and m.target is not None]
            if deletes:
                await self._erase(channel, deletes)

    async def _open_epoch(self, channel: str, epoch: int) -> None:
        """Before seq 1 of ``epoch``: refuse an epoch older than the channel's, announce a newer one."""
        rows = await self._cql.run("head_get", (channel,))
        current = int(rows[0]["epoch"]) if rows and rows[0]["epoch"] is not None else EMPTY_POSITION.epoch
        if epoch < current:
            raise Conflict(f"channel {channel}: epoch {epoch} is older than the stored epoch {current}")
        if epoch > current:
            # The hint moves first, so readers never miss a committed epoch; an epoch with no
            # message yet reads as (epoch, 0).
            await self._cql.run("head_set", (head_timestamp(epoch, 0), epoch, 0, channel))

    async def _commit_segment(self, channel: str, bucket: int, segment: list[StoredMessage], *,
                              check_previous: bool) -> None:
        first, last = segment[0], segment[-1]
        starts_bucket = first.seq == bucket * self._bucket_size + 1
        if starts_bucket and bucket > 0 and check_previous:
            # The bucket CAS cannot see the previous bucket; a full bucket never changes again, so
            # this check stays true once it is.
            before = await self._bucket_last(channel, first.epoch, bucket - 1)
            if before != first.seq - 1:
                raise Conflict(f"channel {channel}: seq {first.epoch}/{first.seq} does not follow {before}")
        expected = None if starts_bucket else first.seq - 1
        statements: list[tuple[str, Sequence[Any]]] = [
            ("bucket_cas", (last.seq, channel, first.epoch, bucket, expected)),
            *(("message_put", (channel, m.epoch, bucket, m.seq, m.id, m.sender, m.device, m.cmid, m.ts, m.kind,
                               m.body, m.target, m.emoji, m.op, m.reply_to, m.thread, m.count_seq))
              for m in segment),
        ]
        rows = await self._cql.batch(statements, f"append to {channel}")
        if not rows or rows[0].get("[applied]", False):
            return
        current = rows[0].get("last_seq")
        if current is not None and int(current) >= last.seq:
            # An earlier attempt of this very batch may have committed (a CAS that timed out):
            # then the stored rows are exactly ours (same Snowflake ids, same everything).
            stored = await self._range(channel, first.epoch, first.seq, last.seq)
            if stored == segment:
                logger.info("channel %s: seqs %d..%d were already committed by an earlier attempt",
                            channel, first.seq, last.seq)
                return
        raise Conflict(f"channel {channel}: seq {first.epoch}/{first.seq} does not follow the stored {current}")

    async def close(self) -> None:
        await self._cql.close()


def _user(row: Row) -> User:
    return User(row["user_id"], row["username"], row["password_hash"], int(row["created_ms"]))


def _channel(row: Row) -> Channel:
    return Channel(row["channel_id"], row["kind"], row["name"], row["created_by"], int(row["created_ms"]))


class CassandraDirectory:
    """:class:`Directory` on the same keyspace: uniqueness by lightweight transactions.

    Retired: the directory lives in SQLite or PostgreSQL (servers, roles and overwrites need
    transactions and joins); nothing opens this class any more. It stays, at parity for direct and
    group channels, for exporting existing data and will be removed with its tables
    (docs/storage-cassandra.md, "The directory moved out of Cassandra").

    Usernames (casefolded), direct-channel pairs and memberships are claimed with ``IF NOT EXISTS``;
    the denormalised reverse tables (``users``, ``channels_by_user``) are written with plain,
    idempotent writes around them.
    """

    def __init__(self, settings: CassandraSettings, *, tuning: ClusterTuning = ClusterTuning()) -> None:
        self._cql = CqlSession(settings, tuning)

    async def open(self) -> CassandraDirectory:
        """Connect to the keyspace and prepare the statements."""
        await self._cql.open(self._cql.settings.keyspace, _DIRECTORY_STATEMENTS)
        return self

    async def create_user(self, username: str, password_hash: str, *, now_ms: int) -> User:
        user = User(new_random_id("u"), username, password_hash, now_ms)
        # The id row first: if the claim loses, it is an orphan nobody can reach.
        await self._cql.run("user_put", (user.user_id, username, password_hash, now_ms))
        rows = await self._cql.run("user_claim", (username.casefold(), user.user_id, username, password_hash, now_ms))
        if rows and not rows[0].get("[applied]", False):
            raise Conflict(f"username {username!r} is taken")
        return user

    async def user_by_name(self, username: str) -> User | None:
        rows = await self._cql.run("user_by_name", (username.casefold(),))
        return _user(rows[0]) if rows else None

    async def existing_users(self, user_ids: Collection[str]) -> set[str]:
        wanted = list(dict.fromkeys(user_ids))
        found = await _gather(*(self._cql.run("user_get", (u,)) for u in wanted))
        return {u for u, rows in zip(wanted, found, strict=True) if rows}

    async def create_channel(
        self, kind: ChannelKind, name: str | None, creator: str, members: Collection[str], *, now_ms: int,
    ) -> tuple[Channel, bool]:
        everyone = list(dict.fromkeys([creator, *members]))
        key = direct_key(*everyone) if kind == "direct" and len(everyone) == 2 else None
        channel = Channel(new_random_id("c"), kind, name, creator, now_ms)
        await self._cql.run("channel_put", (channel.channel_id, kind, name, creator, now_ms))
        if key is not None:
            rows = await self._cql.run("direct_claim", (key, channel.channel_id))
            if rows and not rows[0].get("[applied]", False):
                existing = await self.get_channel(rows[0]["channel_id"])
                if existing is None:
                    raise StorageUnavailable(f"direct channel {rows[0]['channel_id']} is claimed but not yet visible")
                return existing, False
        await _gather(*(self._add(channel.channel_id, u, now_ms, claim=False) for u in everyone))
        return channel, True

    async def get_channel(self, channel_id: str) -> Channel | None:
        rows = await self._cql.run("channel_get", (channel_id,))
        return _channel(rows[0]) if rows else None

    async def _add(self, channel_id: str, user_id: str, now_ms: int, *, claim: bool) -> bool:
        rows = await self._cql.run("member_claim" if claim else "member_put", (channel_id, user_id, now_ms))
        added = not claim or not rows or bool(rows[0].get("[applied]", False))
        # Also when the claim was lost: a crash between the two writes is repaired by asking again.
        await self._cql.run("user_channel_put", (user_id, channel_id))
        return added

    async def add_member(self, channel_id: str, user_id: str, *, now_ms: int) -> bool:
        return await self._add(channel_id, user_id, now_ms, claim=True)

    async def remove_member(self, channel_id: str, user_id: str) -> bool:
        rows = await self._cql.run("member_drop", (channel_id, user_id))
        await self._cql.run("user_channel_drop", (user_id, channel_id))
        return bool(rows and rows[0].get("[applied]", False))

    async def members(self, channel_id: str) -> list[str]:
        rows = await self._cql.run("members_of", (channel_id,))
        return sorted(r["user_id"] for r in rows)

    async def channel_ids_of(self, user_id: str) -> frozenset[str]:
        rows = await self._cql.run("user_channels", (user_id,))
        return frozenset(r["channel_id"] for r in rows)

    async def channels_of(self, user_id: str) -> list[Channel]:
        ids = sorted(await self.channel_ids_of(user_id))
        found = await _gather(*(self.get_channel(c) for c in ids))
        return sorted((c for c in found if c is not None), key=lambda c: (c.created_ms, c.channel_id))

    async def memberships(self, pairs: Collection[tuple[str, str]]) -> set[tuple[str, str]]:
        wanted = list(dict.fromkeys(pairs))
        found = await _gather(*(self._cql.run("member_get", p) for p in wanted))
        return {p for p, rows in zip(wanted, found, strict=True) if rows}

    async def shares_channel(self, a: str, b: str) -> bool:
        mine, theirs = await _gather(self.channel_ids_of(a), self.channel_ids_of(b))
        return bool(mine & theirs)

    async def close(self) -> None:
        await self._cql.close()


async def migrate(settings: CassandraSettings, *, tuning: ClusterTuning = ClusterTuning(),
                  clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000) -> list[int]:
    """Bring the keyspace to the latest ``schema.cql`` migration; the versions applied now.

    Creates the keyspace (NetworkTopologyStrategy, ``settings.replication_factor``) and the ledger
    when missing, then applies each numbered section above the highest recorded one, recording it
    after its last statement. Safe to re-run, and to run after a crash mid-section (every statement
    is ``IF NOT EXISTS``). Run by ``python -m mqchat.storage.cql migrate``, never on import.
    """
    schema = load_schema(settings.keyspace, replication_factor=settings.replication_factor,
                         local_dc=settings.local_dc)
    cql = await CqlSession(settings, tuning).open(None)
    try:
        for statement in schema.preamble:
            await cql.ddl(statement)
        await cql.ddl(f"USE {settings.keyspace}")
        await cql.prepare(["migrations_done", "migration_record"])
        done = {int(r["version"]) for r in await cql.run("migrations_done", ())}
        applied = []
        for migration in schema.migrations:
            if migration.version in done:
                continue
            logger.info("applying migration %d: %s", migration.version, migration.name)
            for statement in migration.statements:
                await cql.ddl(statement)
            await cql.run("migration_record", (migration.version, migration.name, clock_ms()))
            applied.append(migration.version)
        return applied
    finally:
        await cql.close()


def _conformance(settings: CassandraSettings) -> tuple[MessageStore, Directory]:
    """Static conformance: mypy checks these classes against the protocols."""
    return CassandraMessageStore(settings), CassandraDirectory(settings)
