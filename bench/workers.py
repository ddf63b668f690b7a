"""Client load generators, each in its own process so the client side is not what is measured.

A worker is started by :class:`Worker` (``multiprocessing``, spawn) with a role and its
parameters, runs the role on its own event loop (uvloop when installed) with
:class:`mobile_sim.mqtt.MqttClient` connections, and talks to the orchestrator over a pipe::

    orchestrator                         worker
        ── start(role, params) ──▶   connect, subscribe
        ◀── ("ready", {}) ────────
        ── ("go", {}) ───────────▶   publish / count / connect N
        ◀── ("progress", {...}) ──   (idle connections, every 0.5 s)
        ── ("expect", {"sent"}) ─▶   (subscribers: the publisher's count; wait until delivered)
        ◀── ("result", {...}) ────   figures and the worker's own CPU seconds / wall seconds
        ── ("close", {}) ────────▶   (idle connections: disconnect all)
        ◀── ("closed", {}) ───────

Subscribers publish their per-client delivery counts in shared memory (one slot each); the
publisher reads the slowest one to stay at most ``backlog`` messages ahead of it, so no broker
queue limit is reached and the measured rate is the end-to-end one. All timestamps are
``time.monotonic_ns()``: one clock for every process on the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.sharedctypes
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from harness.ports import raise_fd_limit
from mobile_sim.mqtt import ConnectionLost, Message, MqttClient

HOST = "127.0.0.1"
BATCH = 16
"""Most PUBLISHes a closed-loop publisher writes at once."""
Counts = Any
"""A ``multiprocessing.RawArray('q', n)``: delivered messages per subscriber."""


class Channel:
    """The worker's end of the pipe."""

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        self._conn = conn

    def send(self, kind: str, **data: Any) -> None:
        self._conn.send((kind, data))

    async def recv(self, kind: str) -> dict[str, Any]:
        got, data = await asyncio.to_thread(self._conn.recv)
        if got != kind:
            raise RuntimeError(f"expected {kind!r} from the orchestrator, got {got!r}")
        assert isinstance(data, dict)
        return data


class Cpu:
    """This process's CPU seconds and wall seconds since :meth:`start`."""

    def start(self) -> None:
        self.cpu0, self.wall0 = time.process_time(), time.monotonic()

    def figures(self) -> dict[str, float]:
        cpu, wall = time.process_time() - self.cpu0, time.monotonic() - self.wall0
        return {"cpu_s": cpu, "wall_s": wall}


# ------------------------------------------------------------------------------------------ roles


async def subscribers(ch: Channel, *, port: int, topic: str, n: int, slot0: int, counts: Counts, tag: str,
                      latency: bool, drain_s: float) -> None:
    """``n`` subscribers of ``topic`` (QoS 1), counting deliveries (and latencies when ``latency``)."""
    first = [0] * n
    last = [0] * n
    lat_ns: list[int] = []

    def handler(i: int) -> Callable[[Message], None]:
        slot = slot0 + i
        seen = 0
        record = lat_ns.append
        clock = time.monotonic_ns

        def on_message(msg: Message) -> None:
            nonlocal seen
            now = clock()
            seen += 1
            counts[slot] = seen
            if seen == 1:
                first[i] = now
            last[i] = now
            if latency:
                record(now - int.from_bytes(msg.payload[:8], "big"))

        return on_message

    clients = [MqttClient(client_id=f"{tag}-sub-{slot0 + i}", on_message=handler(i)) for i in range(n)]
    for c in clients:
        await c.connect(HOST, port)
        granted = await c.subscribe((topic, 1))
        if granted != [1]:
            raise RuntimeError(f"subscription refused: {granted}")
    ch.send("ready")
    await ch.recv("go")
    cpu = Cpu()
    cpu.start()
    go_ns = time.monotonic_ns()
    expected = (await ch.recv("expect"))["sent"]
    deadline = time.monotonic() + drain_s
    # Polls the shared counts against a deadline: a lost delivery must not hang the run.
    while time.monotonic() < deadline and any(counts[slot0 + i] < expected for i in range(n)):  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    figures = cpu.figures()
    if max(last) > go_ns:  # busy share while deliveries came in, not over the wait that followed
        figures["wall_s"] = (max(last) - go_ns) / 1e9
    delivered = [counts[slot0 + i] for i in range(n)]
    lost = [c for c in clients if c.closed.done()]
    await asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True)
    ch.send("result", delivered=sum(delivered), first_ns=min((f for f in first if f), default=0),
            last_ns=max(last), latencies_ns=lat_ns, connections_lost=len(lost), **figures)


async def publisher(ch: Channel, *, port: int, topic: str, tag: str, messages: int, seconds: float,
                    window: int, backlog: int, counts: Counts, n_counts: int, rate: float, poisson: bool,
                    payload_size: int) -> None:
    """One publisher of QoS 1 messages on ``topic``.

    ``rate`` 0: closed loop, at most ``window`` PUBLISHes waiting for PUBACK and at most ``backlog``
    messages ahead of the slowest subscriber. ``rate`` > 0: open loop, ``rate`` messages per second
    (even pacing, or Poisson arrivals), at most 10,000 unacknowledged. Stops after ``messages``
    messages or ``seconds`` seconds, whichever is first. Each payload starts with the send time.
    """
    client = MqttClient(client_id=f"{tag}-pub")
    await client.connect(HOST, port)
    ch.send("ready")
    await ch.recv("go")
    pad = b"\x00" * max(0, payload_size - 8)
    limit = window if rate == 0 else 10_000
    free = limit
    space: asyncio.Future[None] | None = None
    acked = errors = last_ack = 0

    def done(fut: asyncio.Future[None]) -> None:
        nonlocal free, acked, errors, last_ack
        free += 1
        if fut.cancelled() or fut.exception() is not None:
            errors += 1
        else:
            acked += 1
            last_ack = time.monotonic_ns()
        if space is not None and not space.done():
            space.set_result(None)

    async def wait_for_space(until: float) -> None:
        nonlocal space
        space = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, until - time.monotonic())):
                await space

    cpu = Cpu()
    cpu.start()
    start = time.monotonic()
    stop_at = start + seconds
    low = 0  # the slowest subscriber's count, last read
    sent = 0
    next_at = start
    try:
        while sent < messages:
            now = time.monotonic()
            if now >= stop_at:
                break
            if free == 0:
                await wait_for_space(stop_at)
                continue
            if rate:
                next_at += random.expovariate(rate) if poisson else 1 / rate
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                n = 1
            else:
                if sent - low >= backlog:
                    low = min(counts[:n_counts])
                    while sent - low >= backlog and time.monotonic() < stop_at:
                        await asyncio.sleep(0.0005)
                        low = min(counts[:n_counts])
                    continue
                # Up to BATCH PUBLISHes in one write: a pipelining client, without a syscall per message.
                n = min(free, backlog - (sent - low), messages - sent, BATCH)
            with client.batch():
                for _ in range(n):
                    fut = client.publish_nowait(topic, time.monotonic_ns().to_bytes(8, "big") + pad, qos=1)
                    assert fut is not None
                    fut.add_done_callback(done)
            free -= n
            sent += n
        drain_until = time.monotonic() + 15
        while free < limit and time.monotonic() < drain_until:  # every PUBACK in (or failed), within 15 s
            await wait_for_space(drain_until)
    except ConnectionLost:
        pass
    figures = cpu.figures()
    lost = client.closed.done()
    with contextlib.suppress(ConnectionLost):
        await client.disconnect()
    ch.send("result", sent=sent, acked=acked, errors=errors, start_ns=int(start * 1e9),
            last_ack_ns=last_ack, connection_lost=lost, **figures)


async def idle(ch: Channel, *, port: int, n: int, tag: str, concurrency: int, keepalive: int) -> None:
    """Open ``n`` connections (CONNECT with ``keepalive``), ``concurrency`` at a time, and hold them."""
    clients = [MqttClient(client_id=f"{tag}-{i}", keepalive=keepalive) for i in range(n)]
    latencies_ns: list[int] = []
    failures: dict[str, int] = {}
    ok: list[MqttClient] = []
    sem = asyncio.Semaphore(concurrency)

    async def one(c: MqttClient) -> None:
        async with sem:
            t0 = time.monotonic_ns()
            try:
                await c.connect(HOST, port, timeout=30)
            except Exception as exc:  # refused, reset, timed out: counted and reported, not fatal
                name = type(exc).__name__
                failures[name] = failures.get(name, 0) + 1
                return
            latencies_ns.append(time.monotonic_ns() - t0)
            ok.append(c)

    async def report() -> None:
        while True:
            await asyncio.sleep(0.5)
            ch.send("progress", done=len(latencies_ns) + sum(failures.values()))

    ch.send("ready")
    await ch.recv("go")
    cpu = Cpu()
    cpu.start()
    start = time.monotonic_ns()
    reporter = asyncio.create_task(report(), name="bench.idle.progress")
    try:
        await asyncio.gather(*(one(c) for c in clients))
    finally:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    end = time.monotonic_ns()
    figures = cpu.figures()
    ch.send("result", connected=len(latencies_ns), failures=failures, start_ns=start, end_ns=end,
            latencies_ns=latencies_ns, **figures)
    await ch.recv("close")
    ch.send("closing", dropped=sum(1 for c in ok if c.closed.done()))
    live = [c for c in ok if not c.closed.done()]
    for i in range(0, len(live), 500):
        await asyncio.gather(*(c.disconnect() for c in live[i : i + 500]), return_exceptions=True)
    ch.send("closed")


ROLES: dict[str, Callable[..., Coroutine[Any, Any, None]]] = {"subscribers": subscribers, "publisher": publisher,
                                                    "idle": idle}


def _entry(conn: multiprocessing.connection.Connection, role: str, params: dict[str, Any]) -> None:
    raise_fd_limit()
    ch = Channel(conn)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(ROLES[role](ch, **params))
    else:
        uvloop.run(ROLES[role](ch, **params))


# ----------------------------------------------------------------------------------- orchestrator


class WorkerFailed(RuntimeError):
    """A worker exited or did not answer in time."""


class Worker:
    """The orchestrator's handle on one load-generator process."""

    _ctx = multiprocessing.get_context("spawn")

    def __init__(self, role: str, **params: Any) -> None:
        self.role = role
        self._conn, child = self._ctx.Pipe()
        self.proc = self._ctx.Process(target=_entry, args=(child, role, params), daemon=True,
                                      name=f"bench-{role}")
        self.proc.start()
        child.close()

    def send(self, kind: str, **data: Any) -> None:
        self._conn.send((kind, data))

    def recv(self, timeout: float) -> tuple[str, dict[str, Any]]:
        """The next message; raises :class:`WorkerFailed` if none comes within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self._conn.poll(min(0.2, max(0.0, deadline - time.monotonic()))):
            if not self.proc.is_alive():
                raise WorkerFailed(f"{self.role} worker exited with {self.proc.exitcode}")
            if time.monotonic() >= deadline:
                raise WorkerFailed(f"{self.role} worker sent nothing within {timeout:.0f}s")
        try:
            kind, data = self._conn.recv()
        except EOFError as exc:
            raise WorkerFailed(f"{self.role} worker exited with {self.proc.exitcode}") from exc
        return kind, data

    def poll(self, timeout: float) -> tuple[str, dict[str, Any]] | None:
        """The next message if one comes within ``timeout`` seconds, else None."""
        if self._conn.poll(timeout):
            return self.recv(0)
        if not self.proc.is_alive():
            raise WorkerFailed(f"{self.role} worker exited with {self.proc.exitcode}")
        return None

    def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        """The next message that is not a progress report, which must be ``kind``."""
        while True:
            got, data = self.recv(timeout)
            if got == kind:
                return data
            if got != "progress":
                raise WorkerFailed(f"expected {kind!r} from the {self.role} worker, got {got!r}")

    def stop(self) -> None:
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self._conn.close()


def shared_counts(n: int) -> Counts:
    return multiprocessing.get_context("spawn").RawArray("q", n)
