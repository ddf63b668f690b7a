"""The stand-in's tables: an in-memory model of exactly the statements mqchat prepares.

Each statement of :data:`mqchat.storage.cassandra.STATEMENTS` has a handler written by hand
against plain dicts. That is what the stand-in is: a model of the *intended* semantics of our
statements (a conditional batch applies whole or not at all, ``IF NOT EXISTS`` claims once,
``USING TIMESTAMP`` keeps the newest write), not an implementation of CQL. It proves nothing
about real Cassandra's consistency, compaction, LWT (Paxos) behaviour or multi-node routing; the
contract suite runs against a real node for that (``CASSANDRA_HOSTS``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mqchat.storage.cassandra import STATEMENTS
from tests.cassandra_standin import wire

#: Column types of every column our statements bind or select.
COLUMN_TYPES: dict[str, int] = {
    **dict.fromkeys(["epoch", "bucket", "version"], wire.INT),
    **dict.fromkeys(["seq", "last_seq", "id", "ts", "created_ms", "joined_ms", "applied_ms", "[timestamp]",
                     "target", "reply_to", "thread", "count_seq"], wire.BIGINT),
    "[applied]": wire.BOOLEAN,
}

_COMPARE = re.compile(r"(\w+)\s*(?:=|>=|<=|<|>)\s*\?|TIMESTAMP\s+\?")


def _type(name: str) -> int:
    return COLUMN_TYPES.get(name, wire.VARCHAR)


def bind_columns(cql: str) -> list[wire.Column]:
    """The bound variables of one of our statements, in order, with their types."""
    insert = re.match(r"INSERT INTO \w+ \(([^)]*)\) VALUES", cql)
    if insert:
        names = [n.strip() for n in insert.group(1).split(",")]
    else:
        names = [m.group(1) or "[timestamp]" for m in _COMPARE.finditer(cql)]
    return [(n, _type(n)) for n in names]


def result_columns(cql: str) -> list[wire.Column]:
    select = re.match(r"SELECT (.+?) FROM", cql)
    if not select:
        return []  # writes; a conditional one answers with columns of its own
    return [(n.strip(), _type(n.strip())) for n in select.group(1).split(",")]


def table_of(cql: str) -> str:
    found = re.search(r"(?:FROM|INTO|UPDATE)\s+(\w+)", cql)
    return found.group(1) if found else "t"


@dataclass
class Result:
    """What a statement answered: rows (a SELECT or a conditional write), or nothing."""

    columns: list[wire.Column] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    is_rows: bool = False


def lwt(applied: bool, extra: Sequence[tuple[str, Any]] = ()) -> Result:
    columns = [("[applied]", wire.BOOLEAN), *((name, _type(name)) for name, _ in extra)]
    return Result(columns, [(applied, *(value for _, value in extra))], is_rows=True)


@dataclass
class Bucket:
    last_seq: int | None = None
    rows: dict[int, tuple[Any, ...]] = field(default_factory=dict)  # seq -> (id, sender, ..., body, target, ...)


class Model:
    """The tables. Not thread-safe by itself: the server serialises calls."""

    def __init__(self) -> None:
        self.heads: dict[str, tuple[int, int, int]] = {}  # channel -> (write timestamp, epoch, last_seq)
        self.buckets: dict[tuple[str, int, int], Bucket] = {}
        self.cmids: dict[tuple[str, str, str], tuple[int, int, int]] = {}
        self.users: dict[str, tuple[str, str, int]] = {}
        self.users_by_name: dict[str, tuple[str, str, str, int]] = {}
        self.channels: dict[str, tuple[str, str | None, str, int]] = {}
        self.direct: dict[str, str] = {}
        self.members: dict[str, dict[str, int]] = {}
        self.channels_by_user: dict[str, set[str]] = {}
        self.migrations: dict[int, tuple[str, int]] = {}
        self.handlers: dict[str, Callable[[list[Any]], Result]] = {
            name: getattr(self, f"_{name}") for name in STATEMENTS
        }

    def run(self, name: str, values: list[Any]) -> Result:
        return self.handlers[name](values)

    def run_batch(self, items: list[tuple[str, list[Any]]]) -> Result:
        """A logged batch; with a ``bucket_cas`` in it, a single-partition conditional batch."""
        cas = [values for name, values in items if name == "bucket_cas"]
        if cas:
            key = tuple(cas[0][1:4])
            for name, values in items:
                if name == "message_put" and tuple(values[0:3]) != key:
                    raise ValueError("Batch with conditions cannot span multiple partitions")
                if name not in ("bucket_cas", "message_put"):
                    raise ValueError(f"statement {name} cannot join a conditional batch")
            bucket = self.buckets.get(key)
            current = bucket.last_seq if bucket else None
            if current != cas[0][4]:
                return lwt(False, [("channel_id", key[0]), ("epoch", key[1]), ("bucket", key[2]),
                                   ("last_seq", current)])
        for name, values in items:
            if name == "bucket_cas":
                self.buckets.setdefault(tuple(values[1:4]), Bucket()).last_seq = values[0]
            else:
                self.run(name, values)
        return lwt(True) if cas else Result()

    # --- messages ----------------------------------------------------------------------------------

    def _head_get(self, v: list[Any]) -> Result:
        head = self.heads.get(v[0])
        return Result(rows=[head[1:]] if head else [], is_rows=True)

    def _head_set(self, v: list[Any]) -> Result:
        ts, epoch, last, channel = v
        current = self.heads.get(channel)
        if current is None or ts >= current[0]:  # last write wins by timestamp, as on a real node
            self.heads[channel] = (ts, epoch, last)
        return Result()

    def _bucket_last(self, v: list[Any]) -> Result:
        bucket = self.buckets.get(tuple(v))
        return Result(rows=[(bucket.last_seq,)] if bucket else [], is_rows=True)

    def _bucket_cas(self, v: list[Any]) -> Result:
        return self.run_batch([("bucket_cas", v)])

    def _message_put(self, v: list[Any]) -> Result:
        channel, epoch, bucket, seq, *rest = v
        self.buckets.setdefault((channel, epoch, bucket), Bucket()).rows[seq] = tuple(rest)
        return Result()

    def _message_erase(self, v: list[Any]) -> Result:
        body, channel, epoch, bucket, seq = v
        found = self.buckets.get((channel, epoch, bucket))
        if found is not None and seq in found.rows:  # an UPDATE of a missing row would create one: never asked
            row = list(found.rows[seq])
            row[6] = body  # (id, sender, device, cmid, ts, kind, body, ...)
            found.rows[seq] = tuple(row)
        return Result()

    def _message_range(self, v: list[Any]) -> Result:
        channel, epoch, bucket, lo, hi = v
        found = self.buckets.get((channel, epoch, bucket))
        rows = [] if found is None else [
            (seq, *found.rows[seq]) for seq in sorted(found.rows, reverse=True) if lo <= seq <= hi
        ]
        return Result(rows=rows, is_rows=True)

    def _cmid_get(self, v: list[Any]) -> Result:
        found = self.cmids.get(tuple(v))
        return Result(rows=[found] if found else [], is_rows=True)

    def _cmid_put(self, v: list[Any]) -> Result:
        self.cmids[tuple(v[:3])] = tuple(v[3:])
        return Result()

    # --- directory ---------------------------------------------------------------------------------

    def _user_put(self, v: list[Any]) -> Result:
        self.users[v[0]] = (v[1], v[2], v[3])
        return Result()

    def _user_get(self, v: list[Any]) -> Result:
        return Result(rows=[(v[0],)] if v[0] in self.users else [], is_rows=True)

    def _user_claim(self, v: list[Any]) -> Result:
        key, *row = v
        existing = self.users_by_name.get(key)
        if existing is not None:
            return lwt(False, [("username_key", key), ("user_id", existing[0]), ("username", existing[1]),
                               ("password_hash", existing[2]), ("created_ms", existing[3])])
        self.users_by_name[key] = tuple(row)
        return lwt(True)

    def _user_by_name(self, v: list[Any]) -> Result:
        found = self.users_by_name.get(v[0])
        return Result(rows=[found] if found else [], is_rows=True)

    def _channel_put(self, v: list[Any]) -> Result:
        self.channels[v[0]] = tuple(v[1:])
        return Result()

    def _channel_get(self, v: list[Any]) -> Result:
        found = self.channels.get(v[0])
        return Result(rows=[(v[0], *found)] if found else [], is_rows=True)

    def _direct_claim(self, v: list[Any]) -> Result:
        if v[0] in self.direct:
            return lwt(False, [("pair_key", v[0]), ("channel_id", self.direct[v[0]])])
        self.direct[v[0]] = v[1]
        return lwt(True)

    def _member_put(self, v: list[Any]) -> Result:
        self.members.setdefault(v[0], {})[v[1]] = v[2]
        return Result()

    def _member_claim(self, v: list[Any]) -> Result:
        members = self.members.setdefault(v[0], {})
        if v[1] in members:
            return lwt(False, [("channel_id", v[0]), ("user_id", v[1]), ("joined_ms", members[v[1]])])
        members[v[1]] = v[2]
        return lwt(True)

    def _member_drop(self, v: list[Any]) -> Result:
        members = self.members.get(v[0], {})
        if v[1] not in members:
            return lwt(False)
        del members[v[1]]
        return lwt(True)

    def _member_get(self, v: list[Any]) -> Result:
        return Result(rows=[(v[1],)] if v[1] in self.members.get(v[0], {}) else [], is_rows=True)

    def _members_of(self, v: list[Any]) -> Result:
        return Result(rows=[(u,) for u in sorted(self.members.get(v[0], {}))], is_rows=True)

    def _user_channel_put(self, v: list[Any]) -> Result:
        self.channels_by_user.setdefault(v[0], set()).add(v[1])
        return Result()

    def _user_channel_drop(self, v: list[Any]) -> Result:
        self.channels_by_user.get(v[0], set()).discard(v[1])
        return Result()

    def _user_channels(self, v: list[Any]) -> Result:
        return Result(rows=[(c,) for c in sorted(self.channels_by_user.get(v[0], ()))], is_rows=True)

    # --- migrations ledger -------------------------------------------------------------------------

    def _migrations_done(self, v: list[Any]) -> Result:
        return Result(rows=[(n,) for n in sorted(self.migrations)], is_rows=True)

    def _migration_record(self, v: list[Any]) -> Result:
        self.migrations[v[0]] = (v[1], v[2])
        return Result()
