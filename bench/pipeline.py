"""End-to-end benchmark (``python -m bench.pipeline``): our full pipeline against bare MQTT pass-through.

Four targets, the same clients, the same load:

- ``mqchat``: ``mqchat up`` (embedded broker + bridge + SQLite). Devices publish on
  ``in/{user}/{device}/{channel}``; the bridge validates, orders, persists (fsync), publishes on
  ``ch/{channel}`` and acks. "ack" is the bridge's ack; "deliver" is arrival on every member.
- ``broker``: the same embedded broker with no auth and no bridge (``mqchat broker --no-auth``): devices
  publish straight on ``ch/{channel}``. "ack" is the PUBACK.
- ``mqchat-mosquitto``: the same pipeline with Mosquitto as its transport (``mqchat up --broker``
  against a Mosquitto started here): bridge, API and workers are unchanged MQTT clients.
- ``mosquitto``: bare Mosquitto, same as ``broker``.

``--bridge-client lean,aiomqtt`` runs each pipeline target once per MQTT client of the bridge
(``bridge.mqtt_client``), named ``mqchat[lean]``, ``mqchat[aiomqtt]``, ..., in the same run;
``--profile DIR`` samples the bridge with py-spy while the load runs (:mod:`bench.profile`) and
prints where its time went.

So ``mqchat / broker`` is what our pipeline costs on top of its broker, ``mqchat / mosquitto`` what
it costs against the fastest broker at hand, and ``mqchat-mosquitto / mosquitto`` what the
pipeline itself (bridge, store, acks, push fan-out) costs over bare pass-through on the same
broker. Every process runs on this machine and only talks to 127.0.0.1. The simulated devices use
:mod:`mobile_sim.mqtt` (an ``asyncio.Protocol`` client, no task per connection), so the clients
take as little of the machine as a Python client can.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench import profile
from harness.client import Api, Session
from harness.mosquitto import Mosquitto, mosquitto_binary
from harness.ports import free_port
from harness.processes import process, wait_port
from harness.system import System
from mobile_sim.mqtt import Message, MqttClient
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
    cpu_ms_per_send: dict[str, float] = field(default_factory=dict)
    """Pipeline targets: CPU ms per acked send of each process (bridge, workers, api, broker)."""
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
    mix: float = 0.0
    """Share of sends that are edits and reactions (target ``mqchat-mix``, run beside ``mqchat``)."""
    bridge_clients: tuple[str, ...] = ("lean",)
    """``bridge.mqtt_client`` values; each pipeline target runs once per value."""
    profile_dir: Path | None = None
    """Where py-spy profiles of the bridge go (None: not profiled)."""


@dataclass
class Peer:
    """One simulated device: an MQTT client plus what it saw."""

    client: MqttClient
    user: str
    device: str
    channel: str
    pipeline: bool = True
    arrivals: dict[str, float] = field(default_factory=dict)
    acks: dict[str, float] = field(default_factory=dict)
    waiting: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    text_seq: int | None = None
    """Seq of this peer's latest acked text (what its edits and reactions name, with ``--mix``)."""
    events: set[str] = field(default_factory=set)
    """cmids of the edits and reactions this peer sent."""

    def on_message(self, msg: Message) -> None:
        now = time.perf_counter()
        if msg.topic.startswith("dev/"):
            ack = schema.decode_ack(msg.payload)
            cmid = ack.cmid or ""
            if ack.ok and ack.seq is not None and cmid not in self.events:
                self.text_seq = max(ack.seq, self.text_seq or 0)
            self.acks[cmid] = now
            fut = self.waiting.pop(cmid, None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        else:
            cmid = (schema.decode_channel_message(msg.payload).cmid if self.pipeline
                    else json.loads(msg.payload)["cmid"])
            self.arrivals[cmid] = now


async def run_load(target: str, peers: list[Peer], load: Load, *, pipeline: bool) -> Result:
    result = Result(target, load.rate)
    mix = load.mix if target.endswith("-mix") else 0.0
    for p in peers:
        p.pipeline = pipeline
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
                req = schema.SendRequest(cmid=cmid, kind="text", body=body)
                if mix and peer.text_seq is not None and int((i + 1) * mix) > int(i * mix):  # evenly spread
                    # Half edits of the peer's latest text, half reactions on it (add, then remove).
                    peer.events.add(cmid)
                    req = (schema.SendRequest(cmid=cmid, kind="edit", target=peer.text_seq, body=body) if i % 2 else
                           schema.SendRequest(cmid=cmid, kind="reaction", target=peer.text_seq, emoji="👍",
                                              op="add" if i % 4 else "remove"))
                payload = schema.encode(req)
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
    return result


@contextlib.asynccontextmanager
async def connect_peers(port: int, specs: list[tuple[str, str, str, str | None]],
                        subscribe: Callable[[str, str, str], list[str]]) -> AsyncIterator[list[Peer]]:
    """Connect one client per ``(user, device, channel, token)`` and subscribe it."""
    peers: list[Peer] = []
    try:
        for user, device, channel, token in specs:
            client = MqttClient(client_id=f"{user}:{device}", username=user, password=token, keepalive=60)
            peer = Peer(client, user, device, channel)
            client.on_message = peer.on_message
            await client.connect("127.0.0.1", port)
            peers.append(peer)
            await client.subscribe(*((t, 1) for t in subscribe(user, device, channel)))
        yield peers
    finally:
        await asyncio.gather(*(p.client.disconnect() for p in peers), return_exceptions=True)


def children(system: System) -> dict[str, int]:
    """The processes of a running ``mqchat up`` by module (``bridge``, ``workers``, ``api``, ``broker``;
    Linux /proc)."""
    assert system.proc is not None
    found: dict[str, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != system.proc.pid:
                continue
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
            if b"-m" in argv:
                found[argv[argv.index(b"-m") + 1].decode()] = int(stat.parent.name)
    return found


def bridge_pid(system: System) -> int | None:
    """The bridge process of a running ``mqchat up`` (Linux /proc), or None."""
    return children(system).get("bridge")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc; 0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def cpu_per_send(system: System, result_of: Callable[[], Result | None]) -> Iterator[None]:
    """Record in the block's result the CPU ms per acked send of each ``mqchat up`` process
    (``cpu_ms_per_send``): unlike throughput, it hardly moves with what else the machine runs."""
    pids = children(system)
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    yield
    result = result_of()
    if result is not None and result.acked:
        result.cpu_ms_per_send = {name: round((cpu_seconds(pid) - before[name]) * 1000 / result.acked, 3)
                                  for name, pid in sorted(pids.items())}


def print_profile(target: str, collapsed: Path) -> None:
    print(f"bridge profile of {target} ({collapsed}): self %, total %, function")
    for function, own, total in profile.top_functions(collapsed, 12):
        print(f"  {own:5.1f} {total:5.1f}  {function}")


async def bench_mqchat(load: Load, workdir: Path, *, broker_port: int | None = None,
                       target: str = "mqchat", bridge_client: str = "lean") -> Result:
    """The full pipeline; ``broker_port``: an external broker (``mqchat up --broker``) instead of the embedded one."""
    # A benchmark from one loopback address: HTTP rate limits off, explicitly (docs/security.md).
    system = System.on_free_ports(workdir, broker_port=broker_port,
                                  env={"MQCHAT_LOG_LEVEL": "WARNING", "MQCHAT_RATELIMIT__ENABLED": "false",
                                       "MQCHAT_BRIDGE__MQTT_CLIENT": bridge_client})
    try:
        system.start(90)
        api = Api(system.api)
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
        async with connect_peers(system.mqtt_port, specs,
                                 lambda u, d, c: [topics.ack(u, d), topics.stream(c)]) as peers:
            pid = bridge_pid(system) if load.profile_dir is not None else None
            result: Result | None = None
            with cpu_per_send(system, lambda: result):
                if load.profile_dir is None or pid is None or profile.py_spy() is None:
                    result = await run_load(target, peers, load, pipeline=True)
                    return result
                out = load.profile_dir / f"bridge-{target}.txt"
                with profile.recording(pid, out):
                    result = await run_load(target, peers, load, pipeline=True)
            print_profile(target, out)
            return result
    finally:
        system.stop()


def _bare_specs(load: Load) -> list[tuple[str, str, str, str | None]]:
    return [(f"c{c}m{m}", "dev", f"bench{c}", None) for c in range(load.channels) for m in range(load.members)]


async def bench_broker(load: Load, workdir: Path) -> Result:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {"MQCHAT_LOG_LEVEL": "WARNING",
                                                                                  "MQCHAT_DATA_DIR": str(workdir)}
    cmd = [sys.executable, "-m", "mqchat.cli", "broker", "--port", str(port), "--no-auth"]
    with process(cmd, log=workdir / "broker.log", env=env) as proc:
        wait_port(port, proc, "mqchat broker")
        async with connect_peers(port, _bare_specs(load), lambda u, d, c: [topics.stream(c)]) as peers:
            return await run_load("broker", peers, load, pipeline=False)


@contextlib.contextmanager
def _mosquitto(workdir: Path) -> Iterator[int | None]:
    """A Mosquitto tuned for load (:class:`harness.mosquitto.Mosquitto`): its port, or None if it is not installed."""
    if mosquitto_binary() is None:
        yield None
        return
    with Mosquitto(workdir, tuned=True) as broker:
        yield broker.port


async def bench_mosquitto(load: Load, workdir: Path) -> Result | None:
    with _mosquitto(workdir) as port:
        if port is None:
            return None
        async with connect_peers(port, _bare_specs(load), lambda u, d, c: [topics.stream(c)]) as peers:
            return await run_load("mosquitto", peers, load, pipeline=False)


async def bench_mqchat_mosquitto(load: Load, workdir: Path, *, target: str = "mqchat-mosquitto",
                                 bridge_client: str = "lean") -> Result | None:
    with _mosquitto(workdir) as port:
        if port is None:
            return None
        return await bench_mqchat(load, workdir, broker_port=port, target=target, bridge_client=bridge_client)


def client_target(target: str, client: str, load: Load) -> str:
    """``mqchat`` → ``mqchat[aiomqtt]`` when several bridge clients are compared."""
    return target if len(load.bridge_clients) == 1 else f"{target}[{client}]"


async def run(load: Load, targets: list[str]) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="mqchat-bench-") as tmp:
        for target in targets:
            workdir = Path(tmp) / target
            workdir.mkdir()
            if target == "mqchat":
                for client in load.bridge_clients:
                    (workdir / client).mkdir()
                    results.append(await bench_mqchat(load, workdir / client, bridge_client=client,
                                                      target=client_target("mqchat", client, load)))
                if load.mix:
                    (workdir / "mix").mkdir()
                    results.append(await bench_mqchat(load, workdir / "mix", target="mqchat-mix",
                                                      bridge_client=load.bridge_clients[0]))
            elif target == "broker":
                results.append(await bench_broker(load, workdir))
            elif target == "mosquitto":
                r = await bench_mosquitto(load, workdir)
                if r is None:
                    print(f"mosquitto not installed; skipping {target}", file=sys.stderr)
                else:
                    results.append(r)
            elif target == "mqchat-mosquitto":
                for client in load.bridge_clients:
                    (workdir / client).mkdir()
                    r = await bench_mqchat_mosquitto(load, workdir / client, bridge_client=client,
                                                     target=client_target(target, client, load))
                    if r is None:
                        print(f"mosquitto not installed; skipping {target}", file=sys.stderr)
                        break
                    results.append(r)
            else:
                raise ValueError(f"unknown target {target!r}")
    return results


def fsync_floor(directory: Path, samples: int = 300) -> dict[str, float]:
    """The disk's own latency under the pipeline's write: p50/p99 (ms) of ``samples`` one-row SQLite
    commits as the message store makes them (WAL, ``synchronous=FULL``: one fsync each), and of a
    bare ``write`` + ``fsync`` of 200 bytes to a file. No send can be acked faster than its commit,
    so with the disk as the floor the pipeline's p99 is compared with these."""
    def pct(xs: list[float], p: float) -> float:
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, int(p / 100 * len(xs)))], 3)

    directory.mkdir(parents=True, exist_ok=True)
    commits: list[float] = []
    conn = sqlite3.connect(directory / "fsync.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, body TEXT)")
        for i in range(samples):
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (body) VALUES (?)", (f"message {i}",))
            conn.execute("COMMIT")
            commits.append((time.perf_counter() - t0) * 1000)
    finally:
        conn.close()
    syncs: list[float] = []
    fd = os.open(directory / "fsync.bin", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(samples):
            t0 = time.perf_counter()
            os.write(fd, b"x" * 200)
            os.fsync(fd)
            syncs.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
    return {"sqlite_commit_p50_ms": pct(commits, 50), "sqlite_commit_p99_ms": pct(commits, 99),
            "fsync_p50_ms": pct(syncs, 50), "fsync_p99_ms": pct(syncs, 99)}


def ratios(results: list[Result]) -> dict[str, float]:
    """Throughput and latency of each pipeline target against each bare broker.

    ``mqchat-mosquitto/mosquitto`` is the pipeline's own cost on one broker; at a fixed offered
    rate the latency ratios are what matters (throughput is the offered rate for both)."""
    by = {r.target: r.summary() for r in results}
    out: dict[str, float] = {}
    pairs = [("mqchat", "broker"), ("mqchat", "mosquitto"), ("mqchat-mosquitto", "mosquitto"),
             ("mqchat-mosquitto", "mqchat"), ("mqchat-mix", "mqchat")]
    variants = sorted({t[t.index("[") + 1 : -1] for t in by if t.endswith("]")})
    for client in variants:  # several bridge clients: each against the bare brokers, and lean against the others
        pairs += [(f"mqchat[{client}]", "broker"), (f"mqchat[{client}]", "mosquitto"),
                  (f"mqchat-mosquitto[{client}]", "mosquitto")]
        if client != "lean":
            pairs += [("mqchat[lean]", f"mqchat[{client}]"), ("mqchat-mosquitto[lean]", f"mqchat-mosquitto[{client}]")]
    for top, base in pairs:
        if top not in by or base not in by:
            continue
        a, b = by[top], by[base]
        if b["msgs_per_s"]:
            out[f"throughput {top}/{base}"] = round(a["msgs_per_s"] / b["msgs_per_s"], 3)
        for key in ("deliver_p50_ms", "deliver_p99_ms"):
            if b[key] and b[key] == b[key]:  # not zero, not NaN
                out[f"{key.removesuffix('_ms').replace('_', ' ')} {top}/{base}"] = round(a[key] / b[key], 2)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.pipeline",
                                description="full pipeline vs our bare broker vs bare Mosquitto, same clients and load")
    p.add_argument("--channels", type=int, default=10)
    p.add_argument("--members", type=int, default=5, help="devices per channel; each one sends")
    p.add_argument("--messages", type=int, default=2000, help="sends in total")
    p.add_argument("--rate", type=float, default=0, help="offered sends/s in total; 0 = closed loop")
    p.add_argument("--window", type=int, default=20, help="sends in flight per device")
    p.add_argument("--mix", type=float, default=0.0,
                   help="also run the pipeline with this share of sends being edits and reactions (mqchat-mix)")
    p.add_argument("--targets", default="mqchat,mqchat-mosquitto,broker,mosquitto",
                   help="any of mqchat, mqchat-mosquitto (the pipeline over Mosquitto), broker (ours, bare), mosquitto")
    p.add_argument("--bridge-client", default="lean",
                   help="bridge.mqtt_client of the pipeline targets; several (lean,aiomqtt) run each pipeline "
                        "target once per client, named mqchat[lean], mqchat[aiomqtt], ...")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="sample the bridge with py-spy during each pipeline run; collapsed stacks go to DIR")
    p.add_argument("--fsync-samples", type=int, default=300,
                   help="commits timed for the disk's floor (fsync alone, printed with the results); 0: skip")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    if args.profile is not None and profile.py_spy() is None:
        print("--profile: py-spy is not installed (pip install py-spy); running without profiles", file=sys.stderr)
    clients = tuple(c.strip() for c in args.bridge_client.split(",") if c.strip())
    if not clients or any(c not in ("lean", "aiomqtt") for c in clients):
        p.error(f"--bridge-client: lean and/or aiomqtt, not {args.bridge_client!r}")
    load = Load(args.channels, args.members, args.messages, args.rate, args.window, args.mix, clients, args.profile)
    console = Console(stderr=True)
    with console.status(f"benchmarking {args.targets} ({args.messages} sends, {args.channels}x{args.members})"):
        results = asyncio.run(run(load, args.targets.split(",")))
    table = Table(title=f"{args.messages} sends into {args.channels} channels x {args.members} members, "
                        f"{'closed loop, window ' + str(args.window) if not args.rate else str(args.rate) + ' msg/s'}")
    cols = ["target", "acked", "delivered", "expected_deliveries", "msgs_per_s", "deliveries_per_s",
            "ack_p50_ms", "ack_p99_ms", "deliver_p50_ms", "deliver_p99_ms", "deliver_max_ms"]
    for c in cols:
        table.add_column(c, justify="right")
    summaries = [r.summary() for r in results]
    for s in summaries:
        table.add_row(*(escape(str(s[c])) for c in cols))
    Console(width=200).print(table)
    rat = ratios(results)
    for k, v in rat.items():
        print(f"{k}: {v}")
    for s in summaries:
        if s["cpu_ms_per_send"]:
            print(f"CPU ms per send {s['target']}: "
                  + ", ".join(f"{name} {ms}" for name, ms in s["cpu_ms_per_send"].items()))
    floor: dict[str, float] = {}
    if args.fsync_samples > 0:
        # Measured here, on the disk the runs wrote to, right after them.
        with tempfile.TemporaryDirectory(prefix="mqchat-bench-fsync-") as tmp:
            floor = fsync_floor(Path(tmp), args.fsync_samples)
        print(f"fsync floor ({args.fsync_samples} commits): one-row SQLite commit "
              f"p50 {floor['sqlite_commit_p50_ms']} / p99 {floor['sqlite_commit_p99_ms']} ms; "
              f"write+fsync p50 {floor['fsync_p50_ms']} / p99 {floor['fsync_p99_ms']} ms")
        for s in summaries:
            if s["target"].startswith("mqchat") and s["deliver_p99_ms"] == s["deliver_p99_ms"]:
                print(f"deliver p99 {s['target']} above the commit floor p99: "
                      f"{round(s['deliver_p99_ms'] - floor['sqlite_commit_p99_ms'], 2)} ms")
    if args.json:
        args.json.write_text(json.dumps({"load": vars(args) | {"json": str(args.json), "profile": str(args.profile)},
                                         "results": summaries,
                                         "ratios": rat, "fsync_floor": floor}, indent=2, default=str))
    lost = [s["target"] for s in summaries if s["delivered"] < s["expected_deliveries"]]
    if lost:
        print(f"incomplete delivery on: {', '.join(lost)}", file=sys.stderr)
        return 1
    return 0



if __name__ == "__main__":
    sys.exit(main())
