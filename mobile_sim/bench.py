"""End-to-end benchmark: our full pipeline against bare MQTT pass-through, in one run.

Three targets, the same clients, the same load:

- ``mqchat``: ``mqchat up`` (amqtt broker + bridge + SQLite). Devices publish on
  ``in/{user}/{device}/{channel}``; the bridge validates, orders, persists (fsync), publishes on
  ``ch/{channel}`` and acks. "ack" is the bridge's ack; "deliver" is arrival on every member.
- ``amqtt``: the same amqtt broker with no auth and no bridge (``mqchat broker --no-auth``): devices
  publish straight on ``ch/{channel}``. "ack" is the PUBACK.
- ``mosquitto``: bare Mosquitto, same as ``amqtt``.

So ``mqchat / amqtt`` is what our pipeline costs on top of its broker, and ``mqchat / mosquitto``
what it costs against the fastest broker at hand. Every process runs on this machine and only
talks to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt

from mobile_sim.client import NODELAY, Api, Session
from mobile_sim.ports import free_port
from mqchat import schema, topics


@dataclass
class Result:
    target: str
    rate: float
    """Offered sends per second (0 = as fast as acks allow)."""
    sent: int = 0
    acked: int = 0
    delivered: int = 0
    expected_deliveries: int = 0
    seconds: float = 0.0
    ack_ms: list[float] = field(default_factory=list, repr=False)
    deliver_ms: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        def pct(xs: list[float], p: float) -> float:
            if not xs:
                return float("nan")
            xs = sorted(xs)
            return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 2)

        d = {k: v for k, v in asdict(self).items() if k not in ("ack_ms", "deliver_ms")}
        d["msgs_per_s"] = round(self.acked / self.seconds, 1) if self.seconds else 0.0
        d["deliveries_per_s"] = round(self.delivered / self.seconds, 1) if self.seconds else 0.0
        for name, xs in (("ack", self.ack_ms), ("deliver", self.deliver_ms)):
            d[f"{name}_p50_ms"] = pct(xs, 50)
            d[f"{name}_p99_ms"] = pct(xs, 99)
            d[f"{name}_max_ms"] = round(max(xs), 2) if xs else float("nan")
            d[f"{name}_mean_ms"] = round(statistics.fmean(xs), 2) if xs else float("nan")
        return d


@dataclass(frozen=True)
class Load:
    channels: int
    members: int
    messages: int
    rate: float
    window: int


@dataclass
class Peer:
    """One simulated device: an MQTT client plus what it saw."""

    client: aiomqtt.Client
    user: str
    device: str
    channel: str
    arrivals: dict[str, float] = field(default_factory=dict)
    acks: dict[str, float] = field(default_factory=dict)
    waiting: dict[str, asyncio.Future[None]] = field(default_factory=dict)


async def _reader(peer: Peer, pipeline: bool) -> None:
    async for msg in peer.client.messages:
        now = time.perf_counter()
        payload = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
        if msg.topic.value.startswith("dev/"):
            cmid = schema.decode_ack(payload).cmid or ""
            peer.acks[cmid] = now
            fut = peer.waiting.pop(cmid, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        else:
            cmid = (schema.decode_channel_message(payload).cmid if pipeline else json.loads(payload)["cmid"])
            peer.arrivals[cmid] = now


async def run_load(target: str, peers: list[Peer], load: Load, *, pipeline: bool) -> Result:
    result = Result(target, load.rate)
    readers = [asyncio.create_task(_reader(p, pipeline)) for p in peers]
    sent_at: dict[str, float] = {}
    senders = peers
    per_sender = max(1, load.messages // len(senders))
    interval = len(senders) / load.rate if load.rate else 0.0
    start = time.perf_counter()

    async def drive(peer: Peer, index: int) -> None:
        window = asyncio.Semaphore(load.window)
        pending: list[asyncio.Task[None]] = []
        first = start + (interval * index / len(senders))
        for i in range(per_sender):
            if interval:
                delay = first + i * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await window.acquire()
            cmid = f"{peer.user}.{i}"
            body = f"message {i} from {peer.device}"
            if pipeline:
                t = topics.send(peer.user, peer.device, peer.channel)
                payload = schema.encode(schema.SendRequest(cmid=cmid, kind="text", body=body))
                done = asyncio.get_running_loop().create_future()
                peer.waiting[cmid] = done
            else:
                t = topics.stream(peer.channel)
                payload = json.dumps({"cmid": cmid, "kind": "text", "body": body}).encode()
                done = None
            sent_at[cmid] = time.perf_counter()

            async def one(cmid: str = cmid, t: str = t, payload: bytes = payload,
                          done: asyncio.Future[None] | None = done) -> None:
                try:
                    await peer.client.publish(t, payload, qos=1)
                    if done is not None:
                        await asyncio.wait_for(done, 30)
                    else:
                        peer.acks[cmid] = time.perf_counter()
                finally:
                    window.release()

            pending.append(asyncio.create_task(one()))
        await asyncio.gather(*pending, return_exceptions=True)

    await asyncio.gather(*(drive(p, i) for i, p in enumerate(senders)))
    result.sent = len(sent_at)
    by_channel: dict[str, list[Peer]] = {}
    for p in peers:
        by_channel.setdefault(p.channel, []).append(p)
    result.expected_deliveries = sum(per_sender * len(ps) * len(ps) for ps in by_channel.values())
    deadline = time.perf_counter() + 15

    def delivered() -> int:
        return sum(len(p.arrivals) for p in peers)

    # Polls the readers' counts against a deadline; a late or lost delivery must not hang the run.
    while delivered() < result.expected_deliveries and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    end = max([t for p in peers for t in p.arrivals.values()] or [time.perf_counter()])
    result.seconds = end - start
    for p in peers:
        for cmid, t in p.acks.items():
            result.ack_ms.append((t - sent_at[cmid]) * 1000)
        for cmid, t in p.arrivals.items():
            result.deliver_ms.append((t - sent_at[cmid]) * 1000)
    result.acked = sum(len(p.acks) for p in peers)
    result.delivered = delivered()
    for r in readers:
        r.cancel()
    await asyncio.gather(*readers, return_exceptions=True)
    return result


@contextlib.asynccontextmanager
async def connect_peers(port: int, specs: list[tuple[str, str, str, str | None]],
                        subscribe: Callable[[str, str, str], list[str]]) -> AsyncIterator[list[Peer]]:
    """Connect one client per ``(user, device, channel, token)`` and subscribe it."""
    peers: list[Peer] = []
    async with contextlib.AsyncExitStack() as stack:
        for user, device, channel, token in specs:
            client = aiomqtt.Client("127.0.0.1", port, identifier=f"{user}:{device}", username=user, password=token,
                                    clean_session=True, max_inflight_messages=1000, socket_options=NODELAY)
            await stack.enter_async_context(client)
            for t in subscribe(user, device, channel):
                await client.subscribe(t, qos=1)
            peers.append(Peer(client, user, device, channel))
        yield peers


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


@contextlib.contextmanager
def _process(cmd: list[str], **kw: Any) -> Any:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, **kw)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def bench_mqchat(load: Load, workdir: Path) -> Result:
    mqtt, ws, http = free_port(), free_port(), free_port()
    cmd = [sys.executable, "-m", "mqchat.cli", "up", "--data-dir", str(workdir / "data"), "--mqtt-port", str(mqtt),
           "--ws-port", str(ws), "--http-port", str(http)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {"MQCHAT_LOG_LEVEL": "WARNING"}
    with _process(cmd, env=env) as proc:
        _wait_port(http, proc)
        api = Api(f"http://127.0.0.1:{http}")
        for _ in range(100):  # the bridge may still be connecting
            if (workdir / "data" / "run" / "bridge.ready").exists():
                break
            await asyncio.sleep(0.1)
        try:
            specs: list[tuple[str, str, str, str | None]] = []
            for c in range(load.channels):
                sessions: list[Session] = []
                for m in range(load.members):
                    name = f"c{c}m{m}"
                    await api.create_user(name, "benchmark-password")
                    sessions.append(await api.login(name, "benchmark-password", "dev"))
                channel = await api.create_channel(sessions[0].token, "group",
                                                   [s.user_id for s in sessions[1:]], name=f"bench{c}")
                specs += [(s.user_id, s.device_id, channel, s.token) for s in sessions]
        finally:
            await api.aclose()
        async with connect_peers(mqtt, specs, lambda u, d, c: [topics.ack(u, d), topics.stream(c)]) as peers:
            return await run_load("mqchat", peers, load, pipeline=True)


def _bare_specs(load: Load) -> list[tuple[str, str, str, str | None]]:
    return [(f"c{c}m{m}", "dev", f"bench{c}", None) for c in range(load.channels) for m in range(load.members)]


async def bench_amqtt(load: Load, workdir: Path) -> Result:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {"MQCHAT_LOG_LEVEL": "WARNING",
                                                                                  "MQCHAT_DATA_DIR": str(workdir)}
    with _process([sys.executable, "-m", "mqchat.cli", "broker", "--port", str(port), "--no-auth"], env=env) as proc:
        _wait_port(port, proc)
        async with connect_peers(port, _bare_specs(load), lambda u, d, c: [topics.stream(c)]) as peers:
            return await run_load("amqtt", peers, load, pipeline=False)


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None)


async def bench_mosquitto(load: Load, workdir: Path) -> Result | None:
    binary = mosquitto_binary()
    if binary is None:
        return None
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1000\n"
                    "max_queued_messages 100000\npersistence false\n")
    with _process([binary, "-c", str(conf)]) as proc:
        _wait_port(port, proc)
        async with connect_peers(port, _bare_specs(load), lambda u, d, c: [topics.stream(c)]) as peers:
            return await run_load("mosquitto", peers, load, pipeline=False)


async def run(load: Load, targets: list[str]) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="mqchat-bench-") as tmp:
        for target in targets:
            workdir = Path(tmp) / target
            workdir.mkdir()
            if target == "mqchat":
                results.append(await bench_mqchat(load, workdir))
            elif target == "amqtt":
                results.append(await bench_amqtt(load, workdir))
            elif target == "mosquitto":
                r = await bench_mosquitto(load, workdir)
                if r is None:
                    print("mosquitto not installed; skipping that baseline", file=sys.stderr)
                else:
                    results.append(r)
    return results


def ratios(results: list[Result]) -> dict[str, float]:
    by = {r.target: r.summary() for r in results}
    out: dict[str, float] = {}
    if "mqchat" in by:
        for base in ("amqtt", "mosquitto"):
            if base in by and by[base]["msgs_per_s"]:
                out[f"throughput mqchat/{base}"] = round(by["mqchat"]["msgs_per_s"] / by[base]["msgs_per_s"], 3)
                out[f"p50 deliver mqchat/{base}"] = round(
                    by["mqchat"]["deliver_p50_ms"] / by[base]["deliver_p50_ms"], 2)
    return out
