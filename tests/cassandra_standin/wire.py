"""CQL native protocol v4 framing and value encoding: just what the stand-in needs.

Reference: the protocol specification, ``native_protocol_v4.spec`` in the Apache Cassandra
repository. Requests are decoded from bytes, responses encoded to bytes; no I/O here.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

VERSION = 4
RESPONSE = 0x80

# opcodes
ERROR, STARTUP, READY, OPTIONS, SUPPORTED, QUERY, RESULT, PREPARE, EXECUTE, REGISTER, BATCH = (
    0x00, 0x01, 0x02, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0D,
)

# result kinds
VOID, ROWS, SET_KEYSPACE, PREPARED = 0x0001, 0x0002, 0x0003, 0x0004

# error codes (section 9 of the spec)
SERVER_ERROR, PROTOCOL_ERROR = 0x0000, 0x000A
UNAVAILABLE, OVERLOADED = 0x1000, 0x1001
WRITE_TIMEOUT, READ_TIMEOUT = 0x1100, 0x1200
SYNTAX_ERROR, INVALID = 0x2000, 0x2200
UNPREPARED = 0x2500

# column types
BIGINT, BOOLEAN, INT, UUID, VARCHAR, INET = 0x0002, 0x0004, 0x0009, 0x000C, 0x000D, 0x0010

LOCAL_QUORUM = 0x0006


class ProtocolError(Exception):
    """A request the stand-in cannot parse."""


@dataclass
class Frame:
    version: int
    flags: int
    stream: int
    opcode: int
    body: bytes


HEADER = struct.Struct(">BBhBi")


def encode_frame(stream: int, opcode: int, body: bytes) -> bytes:
    return HEADER.pack(RESPONSE | VERSION, 0, stream, opcode, len(body)) + body


class Reader:
    """Consumes a request body."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError("truncated body")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        return int(self.take(1)[0])

    def short(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def int32(self) -> int:
        return int(struct.unpack(">i", self.take(4))[0])

    def long(self) -> int:
        return int(struct.unpack(">q", self.take(8))[0])

    def string(self) -> str:
        return self.take(self.short()).decode()

    def long_string(self) -> str:
        return self.take(self.int32()).decode()

    def short_bytes(self) -> bytes:
        return self.take(self.short())

    def value(self) -> bytes | None:
        n = self.int32()
        if n < 0:
            return None  # null (-1) or unset (-2)
        return self.take(n)

    def string_map(self) -> dict[str, str]:
        return {self.string(): self.string() for _ in range(self.short())}


@dataclass
class QueryParams:
    consistency: int
    values: list[bytes | None] = field(default_factory=list)
    skip_metadata: bool = False
    page_size: int | None = None
    paging_state: bytes | None = None
    serial_consistency: int | None = None


def read_params(r: Reader) -> QueryParams:
    p = QueryParams(r.short())
    flags = r.byte()
    if flags & 0x40:
        raise ProtocolError("named values are not supported by the stand-in")
    if flags & 0x01:
        p.values = [r.value() for _ in range(r.short())]
    p.skip_metadata = bool(flags & 0x02)
    if flags & 0x04:
        p.page_size = r.int32()
    if flags & 0x08:
        p.paging_state = r.value()
    if flags & 0x10:
        p.serial_consistency = r.short()
    if flags & 0x20:
        r.long()
    return p


@dataclass
class BatchChild:
    prepared_id: bytes
    values: list[bytes | None]


def read_batch(r: Reader) -> tuple[int, list[BatchChild], int]:
    kind = r.byte()
    children = []
    for _ in range(r.short()):
        if r.byte() != 1:
            raise ProtocolError("the stand-in only batches prepared statements")
        pid = r.short_bytes()
        children.append(BatchChild(pid, [r.value() for _ in range(r.short())]))
    consistency = r.short()
    return kind, children, consistency


# --- values ----------------------------------------------------------------------------------------


def decode_value(kind: int, raw: bytes | None) -> Any:
    if raw is None:
        return None
    if kind == INT:
        return struct.unpack(">i", raw)[0]
    if kind == BIGINT:
        return struct.unpack(">q", raw)[0]
    if kind == VARCHAR:
        return raw.decode()
    if kind == BOOLEAN:
        return raw != b"\x00"
    raise ProtocolError(f"cannot decode type {kind:#x}")


def encode_value(kind: int, value: Any) -> bytes:
    if value is None:
        return struct.pack(">i", -1)
    if kind == INT:
        raw = struct.pack(">i", value)
    elif kind == BIGINT:
        raw = struct.pack(">q", value)
    elif kind == VARCHAR:
        raw = str(value).encode()
    elif kind == BOOLEAN:
        raw = b"\x01" if value else b"\x00"
    elif kind == UUID:
        raw = uuid.UUID(str(value)).bytes
    elif kind == INET:
        raw = ipaddress.ip_address(value).packed
    else:
        raise ProtocolError(f"cannot encode type {kind:#x}")
    return struct.pack(">i", len(raw)) + raw


def _short(n: int) -> bytes:
    return struct.pack(">H", n)


def _int(n: int) -> bytes:
    return struct.pack(">i", n)


def string(s: str) -> bytes:
    raw = s.encode()
    return _short(len(raw)) + raw


def short_bytes(b: bytes) -> bytes:
    return _short(len(b)) + b


Column = tuple[str, int]


def metadata(columns: Sequence[Column], *, keyspace: str, table: str, paging_state: bytes | None = None,
             no_metadata: bool = False) -> bytes:
    """Rows/result metadata with a global table spec."""
    flags = 0x0001
    if paging_state is not None:
        flags |= 0x0002
    if no_metadata:
        flags = (flags & ~0x0001) | 0x0004
    out = _int(flags) + _int(len(columns))
    if paging_state is not None:
        out += _int(len(paging_state)) + paging_state
    if no_metadata:
        return out
    out += string(keyspace) + string(table)
    for name, kind in columns:
        out += string(name) + _short(kind)
    return out


def rows_result(columns: Sequence[Column], rows: Sequence[Sequence[Any]], *, keyspace: str = "standin",
                table: str = "t", paging_state: bytes | None = None, no_metadata: bool = False) -> bytes:
    out = _int(ROWS) + metadata(columns, keyspace=keyspace, table=table, paging_state=paging_state,
                                no_metadata=no_metadata)
    out += _int(len(rows))
    for row in rows:
        for (_, kind), value in zip(columns, row, strict=True):
            out += encode_value(kind, value)
    return out


def void_result() -> bytes:
    return _int(VOID)


def set_keyspace_result(keyspace: str) -> bytes:
    return _int(SET_KEYSPACE) + string(keyspace)


def prepared_result(pid: bytes, params: Sequence[Column], columns: Sequence[Column], *, keyspace: str,
                    table: str) -> bytes:
    # v4 prepared metadata: flags, column count, partition key count (0: no routing hints), spec.
    params_meta = _int(0x0001) + _int(len(params)) + _int(0) + string(keyspace) + string(table)
    for name, kind in params:
        params_meta += string(name) + _short(kind)
    return _int(PREPARED) + short_bytes(pid) + params_meta + metadata(columns, keyspace=keyspace, table=table)


def prepared_id(query: str) -> bytes:
    return hashlib.md5(query.encode()).digest()  # same id as a real node: the MD5 of the query text


def supported() -> bytes:
    entries = {"CQL_VERSION": ["3.4.5"], "COMPRESSION": [], "PROTOCOL_VERSIONS": ["4/v4"]}
    out = _short(len(entries))
    for key, values in entries.items():
        out += string(key) + _short(len(values)) + b"".join(string(v) for v in values)
    return out


def error(code: int, message: str, extra: bytes = b"") -> bytes:
    return _int(code) + string(message) + extra


def write_timeout(write_type: str, *, received: int = 1, block_for: int = 2) -> bytes:
    return error(WRITE_TIMEOUT, "Operation timed out - received only 1 responses.",
                 _short(LOCAL_QUORUM) + _int(received) + _int(block_for) + string(write_type))


def read_timeout(*, received: int = 1, block_for: int = 2, data_present: bool = False) -> bytes:
    return error(READ_TIMEOUT, "Operation timed out - received only 1 responses.",
                 _short(LOCAL_QUORUM) + _int(received) + _int(block_for) + bytes([int(data_present)]))


def unavailable(*, required: int = 2, alive: int = 1) -> bytes:
    return error(UNAVAILABLE, "Cannot achieve consistency level LOCAL_QUORUM",
                 _short(LOCAL_QUORUM) + _int(required) + _int(alive))


def unprepared(pid: bytes) -> bytes:
    return error(UNPREPARED, "Prepared query with ID not found", short_bytes(pid))
