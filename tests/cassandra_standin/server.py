"""A CQL native-protocol v4 server on a loopback port, answering mqchat's statements from memory.

The real cassandra-driver connects to it as to a one-node cluster (with schema and token metadata
turned off, so it only needs OPTIONS, STARTUP, REGISTER and the ``system.local`` /
``system.peers`` queries), prepares our statements, executes them (with paging) and batches them.
Faults are injected on demand: ``WriteTimeout`` (before or after applying the write: the
ambiguous case), ``Unavailable``, ``ReadTimeout``, ``Overloaded``, ``Unprepared`` and a dropped
connection.

What it does NOT prove: real consistency (there is one copy of the data), Paxos/LWT behaviour
under contention or partial failure, compaction, tombstones, partition sizes, multi-node routing,
token awareness, schema agreement, or that our CQL parses on a real node. See model.py.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from mqchat.storage.cassandra import STATEMENTS
from tests.cassandra_standin import wire
from tests.cassandra_standin.model import Model, Result, bind_columns, result_columns, table_of

FaultKind = Literal["write_timeout", "unavailable", "read_timeout", "overloaded", "unprepared", "drop", "delay"]

_DROP = object()
_BY_TEXT = {cql: name for name, cql in STATEMENTS.items()}

_LOCAL_COLUMNS: list[wire.Column] = [
    ("key", wire.VARCHAR), ("host_id", wire.UUID), ("cluster_name", wire.VARCHAR), ("data_center", wire.VARCHAR),
    ("rack", wire.VARCHAR), ("partitioner", wire.VARCHAR), ("release_version", wire.VARCHAR),
    ("schema_version", wire.UUID), ("rpc_address", wire.INET),
]
_LOCAL_ROW = ("local", "5f6d2b4a-0000-4000-8000-000000000001", "standin", "dc1", "rack1",
              "org.apache.cassandra.dht.Murmur3Partitioner", "4.1.0-standin",
              "5f6d2b4a-0000-4000-8000-0000000000aa", "127.0.0.1")


@dataclass
class Fault:
    """One injected failure: on the next ``times`` requests running statement ``on`` (any if None)."""

    kind: FaultKind
    on: str | None
    times: int
    apply: bool
    write_type: str
    delay_s: float = 0.0


class StandIn:
    """The server. ``start()`` binds 127.0.0.1 on a free port; ``stop()`` closes every connection."""

    def __init__(self) -> None:
        self.model = Model()
        self.lock = threading.Lock()
        self.faults: list[Fault] = []
        self.executed: Counter[str] = Counter()
        self.prepares: Counter[str] = Counter()
        self.refused_queries: list[str] = []
        self.faults_fired: Counter[str] = Counter()
        self.pages_served = 0
        self.ddl: list[str] = []
        self.keyspace = "standin"
        self._prepared: dict[bytes, str] = {}
        self._sockets: set[socket.socket] = set()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    # --- control -----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> StandIn:
        standin = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                standin._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="cql-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self.drop_connections()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def drop_connections(self) -> None:
        """Close every client connection (as a crashed or restarted node would)."""
        with self.lock:
            socks = list(self._sockets)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def inject(self, kind: FaultKind, *, on: str | None = None, times: int = 1, apply: bool = False,
               write_type: str = "SIMPLE", delay_s: float = 0.0) -> None:
        """Fail the next ``times`` requests that run statement ``on`` (a name of STATEMENTS).

        ``apply=True`` (write_timeout only) performs the write before answering with the timeout:
        the ambiguous case where the client cannot know whether its write happened. ``delay``
        answers normally after ``delay_s`` seconds (a slow replica).
        """
        if on is not None and on not in STATEMENTS:
            raise ValueError(f"unknown statement {on!r}")
        with self.lock:
            self.faults.append(Fault(kind, on, times, apply, write_type, delay_s))

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def forget_prepared(self) -> None:
        """Drop the prepared-statement cache (as a restarted node does): the next EXECUTE is Unprepared."""
        with self.lock:
            self._prepared.clear()

    # --- connection loop ---------------------------------------------------------------------------

    def _serve(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # replies are small; never wait for Nagle
        with self.lock:
            self._sockets.add(sock)
        try:
            while True:
                header = _recv_exact(sock, wire.HEADER.size)
                if header is None:
                    return
                version, flags, stream, opcode, length = wire.HEADER.unpack(header)
                body = _recv_exact(sock, length) if length else b""
                if body is None:
                    return
                if version & 0x7F != wire.VERSION or flags & 0x01:
                    reply: Any = (wire.ERROR, wire.error(
                        wire.PROTOCOL_ERROR,
                        f"Invalid or unsupported protocol version ({version & 0x7F}); supported versions are (4/v4)"))
                else:
                    try:
                        reply = self._dispatch(opcode, body)
                    except (wire.ProtocolError, ValueError, KeyError) as exc:
                        reply = (wire.ERROR, wire.error(wire.INVALID, f"stand-in: {exc}"))
                if reply is _DROP:
                    sock.shutdown(socket.SHUT_RDWR)
                    return
                sock.sendall(wire.encode_frame(stream, *reply))
        except OSError:
            return
        finally:
            with self.lock:
                self._sockets.discard(sock)
            with contextlib.suppress(OSError):
                sock.close()

    def _dispatch(self, opcode: int, body: bytes) -> Any:
        r = wire.Reader(body)
        if opcode == wire.OPTIONS:
            return wire.SUPPORTED, wire.supported()
        if opcode in (wire.STARTUP, wire.REGISTER):
            return wire.READY, b""
        if opcode == wire.QUERY:
            return self._query(r.long_string(), wire.read_params(r))
        if opcode == wire.PREPARE:
            return self._prepare(r.long_string())
        if opcode == wire.EXECUTE:
            pid = r.short_bytes()
            return self._execute(pid, wire.read_params(r))
        if opcode == wire.BATCH:
            return self._batch(*wire.read_batch(r))
        return wire.ERROR, wire.error(wire.PROTOCOL_ERROR, f"stand-in: opcode {opcode:#x} not supported")

    def _query(self, query: str, params: wire.QueryParams) -> Any:
        text = " ".join(query.split())
        if "FROM system.local" in text:
            return wire.RESULT, wire.rows_result(_LOCAL_COLUMNS, [_LOCAL_ROW], keyspace="system", table="local")
        if "FROM system.peers" in text:
            return wire.RESULT, wire.rows_result([("peer", wire.INET)], [], keyspace="system", table="peers")
        use = text.removeprefix("USE ").strip('"') if text.startswith("USE ") else None
        if use:
            self.keyspace = use
            return wire.RESULT, wire.set_keyspace_result(use)
        if text.split(" ", 1)[0] in ("CREATE", "ALTER", "DROP"):
            with self.lock:
                self.ddl.append(text)
            return wire.RESULT, wire.void_result()  # a real node answers SCHEMA_CHANGE
        with self.lock:
            self.refused_queries.append(text)
        return wire.ERROR, wire.error(wire.INVALID, f"stand-in: unprepared query not supported: {text[:80]}")

    def _prepare(self, query: str) -> Any:
        name = _BY_TEXT.get(query)
        if name is None:
            return wire.ERROR, wire.error(wire.SYNTAX_ERROR, f"stand-in: unknown statement {query[:80]}")
        pid = wire.prepared_id(query)
        with self.lock:
            self._prepared[pid] = name
            self.prepares[name] += 1
        return wire.RESULT, wire.prepared_result(pid, bind_columns(query), result_columns(query),
                                                 keyspace=self.keyspace, table=table_of(query))

    def _take_fault(self, names: list[str]) -> Fault | None:
        for fault in self.faults:
            if fault.times > 0 and (fault.on is None or fault.on in names):
                fault.times -= 1
                self.faults_fired[fault.kind] += 1
                return fault
        return None

    def _decode(self, name: str, raw: list[bytes | None]) -> list[Any]:
        columns = bind_columns(STATEMENTS[name])
        if len(columns) != len(raw):
            raise wire.ProtocolError(f"{name}: {len(raw)} values for {len(columns)} variables")
        return [wire.decode_value(kind, value) for (_, kind), value in zip(columns, raw, strict=True)]

    def _run(self, names: list[str], pid: bytes, work: Any) -> Any:
        """Run ``work()`` under the lock, unless a fault says otherwise."""
        with self.lock:
            fault = self._take_fault(names)
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.delay_s)  # this connection's thread only; other connections go on
            fault = None
        with self.lock:
            if fault is None:
                for n in names:
                    self.executed[n] += 1
                return work()
            if fault.kind == "drop":
                return _DROP
            if fault.kind == "write_timeout":
                if fault.apply:
                    for n in names:
                        self.executed[n] += 1
                    work()
                return wire.ERROR, wire.write_timeout(fault.write_type)
            if fault.kind == "unavailable":
                return wire.ERROR, wire.unavailable()
            if fault.kind == "read_timeout":
                return wire.ERROR, wire.read_timeout()
            if fault.kind == "overloaded":
                return wire.ERROR, wire.error(wire.OVERLOADED, "stand-in: overloaded")
            self._prepared.pop(pid, None)  # unprepared: as if the node had restarted
            return wire.ERROR, wire.unprepared(pid)

    def _execute(self, pid: bytes, params: wire.QueryParams) -> Any:
        with self.lock:
            name = self._prepared.get(pid)
        if name is None:
            return wire.ERROR, wire.unprepared(pid)
        values = self._decode(name, params.values)
        cql = STATEMENTS[name]

        def work() -> Any:
            return self._encode(self.model.run(name, values), cql, params)

        return self._run([name], pid, work)

    def _batch(self, kind: int, children: list[wire.BatchChild], consistency: int) -> Any:
        items: list[tuple[str, list[Any]]] = []
        with self.lock:
            for child in children:
                name = self._prepared.get(child.prepared_id)
                if name is None:
                    return wire.ERROR, wire.unprepared(child.prepared_id)
                items.append((name, child.values))
        decoded = [(name, self._decode(name, raw)) for name, raw in items]
        names = list(dict.fromkeys(name for name, _ in decoded))

        def work() -> Any:
            return self._encode(self.model.run_batch(decoded), "", wire.QueryParams(consistency))

        return self._run(names, children[0].prepared_id, work)

    def _encode(self, result: Result, cql: str, params: wire.QueryParams) -> Any:
        if not result.is_rows:
            return wire.RESULT, wire.void_result()
        columns = result.columns or result_columns(cql)
        rows = result.rows
        state = None
        if params.page_size and params.page_size > 0:
            start = struct.unpack(">q", params.paging_state)[0] if params.paging_state else 0
            end = start + params.page_size
            if start or end < len(rows):
                self.pages_served += 1
            if end < len(rows):
                state = struct.pack(">q", end)
            rows = rows[start:end]
        return wire.RESULT, wire.rows_result(columns, rows, keyspace=self.keyspace, table=table_of(cql) if cql else "t",
                                             paging_state=state,
                                             no_metadata=params.skip_metadata and not result.columns)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            return None
        chunks.extend(chunk)
    return bytes(chunks)
