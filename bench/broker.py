"""``python -m bench.broker``: our broker against bare amqtt and Mosquitto, same load, one run.

Each target (see :mod:`bench.targets`) is started fresh on a free loopback port for each
workload, loaded by client processes (:mod:`bench.workers`), then stopped::

    one-to-one   1 publisher → 1 subscriber, QoS 1, closed loop: msgs/s
    fan-out      1 publisher → 50 subscribers on one topic, QoS 1, closed loop: deliveries/s
    latency      1,000 msg/s offered → 10 subscribers, QoS 1: publish → deliver p50 / p99 / max
    idle         N connections (CONNECT, keep-alive 60): connections/s, broker RSS per connection

Closed loop: at most ``--window`` PUBLISHes wait for PUBACK, and the publisher never runs more
than ``--backlog`` messages ahead of the slowest subscriber. Every workload is bounded in count
and in time. The table gives each figure and its ratio to Mosquitto and to bare amqtt; the
client processes' CPU is reported next to the broker's, to show the clients were not the limit.

On a shared host the rates depend on what else runs: the host's CPU and other users' share of it
are reported for each workload, and the broker's CPU time per message (or per connection) is
the figure that moves least with them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bench import profile as profile_mod
from bench import targets as targets_mod
from bench.targets import TARGETS, Running, host_cpu_ticks, running
from bench.workers import Worker, WorkerFailed, shared_counts
from harness.mosquitto import mosquitto_binary
from harness.ports import raise_fd_limit

WORKLOADS = ("one-to-one", "fan-out", "latency", "idle")
BASES = ("mosquitto", "amqtt")


@dataclass(frozen=True)
class Params:
    """The load; ``--quick`` shrinks the counts, not the shapes."""

    messages: int = 200_000
    """Most messages per throughput workload."""
    seconds: float = 10.0
    """Longest publishing time per throughput workload."""
    window: int = 100
    backlog: int = 500
    fanout_subscribers: int = 50
    sub_procs: int = 2
    """Subscriber processes for the fan-out."""
    rate: float = 1000.0
    latency_seconds: float = 10.0
    latency_subscribers: int = 10
    poisson: bool = False
    conns: int = 10_000
    conn_procs: int = 4
    connect_concurrency: int = 100
    """CONNECTs in flight at once, over all client processes."""
    payload: int = 64
    drain_s: float = 30.0
    """How long subscribers wait for the last deliveries once the publisher is done; what has not
    arrived by then is counted as ``lost``."""


QUICK = {"messages": 2_000, "seconds": 3.0, "fanout_subscribers": 10, "sub_procs": 1, "latency_seconds": 2.0,
         "rate": 500.0, "conns": 300, "conn_procs": 2}

# ------------------------------------------------------------------------------------- figures


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def _cpu_pct(result: dict[str, Any]) -> float:
    return 100 * result["cpu_s"] / result["wall_s"] if result["wall_s"] else float("nan")


class BrokerCpu:
    """The broker's CPU share (% of one core) and the whole host's (% of all cores, other users'
    processes included) since construction."""

    def __init__(self, target: Running) -> None:
        self.target = target
        self.cpu0, self.wall0 = target.cpu_s(), time.monotonic()
        self.host0 = host_cpu_ticks()

    def seconds(self) -> float:
        return self.target.cpu_s() - self.cpu0

    def pct(self) -> float:
        return 100 * self.seconds() / (time.monotonic() - self.wall0)

    def others_pct(self, clients_cpu_s: float) -> float:
        """CPU used on the host by neither the broker nor the benchmark's clients, in % of one core."""
        wall = time.monotonic() - self.wall0
        host_core_pct = self.host_pct() * (os.cpu_count() or 1)
        return max(0.0, host_core_pct - self.pct() - 100 * clients_cpu_s / wall)

    def host_pct(self) -> float:
        busy, total = host_cpu_ticks()
        return 100 * (busy - self.host0[0]) / max(1, total - self.host0[1])


@contextlib.contextmanager
def workers(*started: Worker) -> Iterator[list[Worker]]:
    """Stop every worker on the way out, whatever happened."""
    try:
        yield list(started)
    finally:
        for w in started:
            w.stop()


def _split(n: int, parts: int) -> list[int]:
    parts = max(1, min(parts, n))
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def run_pubsub(target: Running, p: Params, *, subscribers: int, sub_procs: int, rate: float, seconds: float,
               messages: int) -> dict[str, Any]:
    """One publisher and ``subscribers`` subscribers on one topic; returns the raw figures."""
    topic = f"bench/{secrets.token_hex(4)}"
    tag = secrets.token_hex(3)
    counts = shared_counts(subscribers)
    latency = rate > 0
    subs: list[Worker] = []
    slot = 0
    for n in _split(subscribers, sub_procs):
        subs.append(Worker("subscribers", port=target.port, topic=topic, n=n, slot0=slot, counts=counts, tag=tag,
                           latency=latency, drain_s=p.drain_s))
        slot += n
    pub = Worker("publisher", port=target.port, topic=topic, tag=tag, messages=messages, seconds=seconds,
                 window=p.window, backlog=p.backlog, counts=counts, n_counts=subscribers, rate=rate,
                 poisson=p.poisson, payload_size=p.payload)
    with workers(*subs, pub):
        for w in (*subs, pub):
            w.expect("ready", 120)
        cpu = BrokerCpu(target)
        for w in subs:
            w.send("go")
        pub.send("go")
        pres = pub.expect("result", seconds + 60)
        for w in subs:
            w.send("expect", sent=pres["sent"])
        sres = [w.expect("result", p.drain_s + 30) for w in subs]
        broker_cpu, host_cpu, broker_cpu_s = cpu.pct(), cpu.host_pct(), cpu.seconds()
        others = cpu.others_pct(pres["cpu_s"] + sum(r["cpu_s"] for r in sres))
    delivered = sum(r["delivered"] for r in sres)
    last_ns = max(r["last_ns"] for r in sres)
    elapsed = (last_ns - pres["start_ns"]) / 1e9 if last_ns else float("nan")
    out: dict[str, Any] = {
        "sent": pres["sent"], "acked": pres["acked"], "publish_errors": pres["errors"],
        "delivered": delivered, "expected_deliveries": pres["sent"] * subscribers,
        "lost": pres["sent"] * subscribers - delivered, "seconds": round(elapsed, 3),
        "msgs_per_s": round(pres["sent"] / elapsed, 1) if elapsed else 0.0,
        "deliveries_per_s": round(delivered / elapsed, 1) if elapsed else 0.0,
        "broker_cpu_pct": round(broker_cpu, 1), "host_cpu_pct": round(host_cpu, 1),
        "others_cpu_pct": round(others, 1),
        "broker_cpu_us_per_delivery": round(1e6 * broker_cpu_s / delivered, 1) if delivered else float("nan"),
        "publisher_cpu_pct": round(_cpu_pct(pres), 1),
        "subscriber_cpu_pct": round(max(_cpu_pct(r) for r in sres), 1),
        "client_processes": 1 + len(subs),
        "connections_lost": int(pres["connection_lost"]) + sum(r["connections_lost"] for r in sres),
    }
    out["client_cpu_pct"] = max(out["publisher_cpu_pct"], out["subscriber_cpu_pct"])
    if latency:
        ms = [x / 1e6 for r in sres for x in r["latencies_ns"]]
        out |= {"offered_per_s": rate, "latency_p50_ms": round(pct(ms, 50), 2),
                "latency_p99_ms": round(pct(ms, 99), 2), "latency_max_ms": round(max(ms, default=float("nan")), 2),
                "latency_mean_ms": round(statistics.fmean(ms), 2) if ms else float("nan")}
    return out


def one_to_one(target: Running, p: Params, _progress: Progress) -> dict[str, Any]:
    return run_pubsub(target, p, subscribers=1, sub_procs=1, rate=0, seconds=p.seconds, messages=p.messages)


def fan_out(target: Running, p: Params, _progress: Progress) -> dict[str, Any]:
    return run_pubsub(target, p, subscribers=p.fanout_subscribers, sub_procs=p.sub_procs, rate=0,
                      seconds=p.seconds, messages=p.messages)


def latency(target: Running, p: Params, _progress: Progress) -> dict[str, Any]:
    return run_pubsub(target, p, subscribers=p.latency_subscribers, sub_procs=1, rate=p.rate,
                      seconds=p.latency_seconds, messages=int(p.rate * p.latency_seconds))


def idle(target: Running, p: Params, progress: Progress) -> dict[str, Any]:
    """Open ``p.conns`` connections from ``p.conn_procs`` processes; broker RSS before and after."""
    time.sleep(0.5)  # let the fresh broker settle before its baseline
    rss0, fds0 = target.rss_kib(), target.open_fds()
    tag = secrets.token_hex(3)
    shares = _split(p.conns, p.conn_procs)
    per_proc = max(1, p.connect_concurrency // len(shares))
    pool = [Worker("idle", port=target.port, n=n, tag=f"{tag}-{i}", concurrency=per_proc, keepalive=60)
            for i, n in enumerate(shares)]
    with workers(*pool):
        for w in pool:
            w.expect("ready", 120)
        task = progress.add_task(f"{target.name}: connecting", total=p.conns)
        cpu = BrokerCpu(target)
        for w in pool:
            w.send("go")
        done = dict.fromkeys(range(len(pool)), 0)
        results: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + 300
        while len(results) < len(pool):
            if time.monotonic() > deadline:
                raise WorkerFailed("connections not done within 300 s")
            for i, w in enumerate(pool):
                if i in results:
                    continue
                msg = w.poll(0.02)
                if msg is None:
                    continue
                kind, data = msg
                if kind == "progress":
                    done[i] = data["done"]
                elif kind == "result":
                    results[i] = data
                    done[i] = shares[i]
                progress.update(task, completed=sum(done.values()))
        broker_cpu, host_cpu, broker_cpu_s = cpu.pct(), cpu.host_pct(), cpu.seconds()
        others = cpu.others_pct(sum(r["cpu_s"] for r in results.values()))
        progress.remove_task(task)
        time.sleep(1.0)  # let the broker finish per-connection work before reading its memory
        rss1, fds1 = target.rss_kib(), target.open_fds()
        for w in pool:
            w.send("close")
        dropped = sum(w.expect("closing", 60)["dropped"] for w in pool)
        for w in pool:
            w.expect("closed", 120)
    rs = list(results.values())
    connected = sum(r["connected"] for r in rs)
    failures: dict[str, int] = {}
    for r in rs:
        for name, k in r["failures"].items():
            failures[name] = failures.get(name, 0) + k
    elapsed = (max(r["end_ns"] for r in rs) - min(r["start_ns"] for r in rs)) / 1e9
    ms = [x / 1e6 for r in rs for x in r["latencies_ns"]]
    return {
        "requested": p.conns, "connected": connected, "failures": failures, "dropped_while_idle": dropped,
        "seconds": round(elapsed, 3), "conns_per_s": round(connected / elapsed, 1) if elapsed else 0.0,
        "connect_p50_ms": round(pct(ms, 50), 2), "connect_p99_ms": round(pct(ms, 99), 2),
        "rss_before_kib": rss0, "rss_after_kib": rss1,
        "rss_per_conn_kib": round((rss1 - rss0) / connected, 2) if connected else float("nan"),
        "broker_fds_before": fds0, "broker_fds_after": fds1, "broker_nofile_limit": target.nofile_limit(),
        "broker_cpu_pct": round(broker_cpu, 1), "host_cpu_pct": round(host_cpu, 1),
        "others_cpu_pct": round(others, 1),
        "broker_cpu_us_per_conn": round(1e6 * broker_cpu_s / connected, 1) if connected else float("nan"),
        "client_cpu_pct": round(max(_cpu_pct(r) for r in rs), 1), "client_processes": len(pool),
    }


RUNNERS: dict[str, Callable[[Running, Params, Progress], dict[str, Any]]] = {
    "one-to-one": one_to_one, "fan-out": fan_out, "latency": latency, "idle": idle,
}

#: (workload, figure, label, format) rows of the table, in order.
ROWS: list[tuple[str, str, str, str]] = [
    ("one-to-one", "msgs_per_s", "1→1 QoS 1 msgs/s", ",.0f"),
    ("one-to-one", "broker_cpu_us_per_delivery", "  broker CPU µs per message", ".1f"),
    ("one-to-one", "broker_cpu_pct", "  broker CPU %", ".0f"),
    ("one-to-one", "client_cpu_pct", "  busiest client process CPU %", ".0f"),
    ("one-to-one", "host_cpu_pct", "  host CPU % (all cores, all users)", ".0f"),
    ("one-to-one", "others_cpu_pct", "  other users' CPU % (of one core)", ".0f"),
    ("fan-out", "deliveries_per_s", "1→{subs} QoS 1 deliveries/s", ",.0f"),
    ("fan-out", "msgs_per_s", "  published msgs/s", ",.0f"),
    ("fan-out", "broker_cpu_us_per_delivery", "  broker CPU µs per delivery", ".1f"),
    ("fan-out", "broker_cpu_pct", "  broker CPU %", ".0f"),
    ("fan-out", "client_cpu_pct", "  busiest client process CPU %", ".0f"),
    ("fan-out", "host_cpu_pct", "  host CPU % (all cores, all users)", ".0f"),
    ("fan-out", "others_cpu_pct", "  other users' CPU % (of one core)", ".0f"),
    ("latency", "latency_p50_ms", "{rate:.0f} msg/s → {lsubs}: p50 ms", ".2f"),
    ("latency", "latency_p99_ms", "  p99 ms", ".2f"),
    ("latency", "latency_max_ms", "  max ms", ".2f"),
    ("latency", "deliveries_per_s", "  deliveries/s achieved", ",.0f"),
    ("latency", "broker_cpu_us_per_delivery", "  broker CPU µs per delivery", ".1f"),
    ("latency", "broker_cpu_pct", "  broker CPU %", ".0f"),
    ("latency", "client_cpu_pct", "  busiest client process CPU %", ".0f"),
    ("latency", "host_cpu_pct", "  host CPU % (all cores, all users)", ".0f"),
    ("latency", "others_cpu_pct", "  other users' CPU % (of one core)", ".0f"),
    ("idle", "connected", "{conns:,} idle conns: connected", ",d"),
    ("idle", "conns_per_s", "  connections/s", ",.0f"),
    ("idle", "connect_p99_ms", "  CONNECT→CONNACK p99 ms", ".1f"),
    ("idle", "rss_per_conn_kib", "  broker RSS per connection KiB", ".1f"),
    ("idle", "broker_cpu_us_per_conn", "  broker CPU µs per connection", ".0f"),
    ("idle", "broker_cpu_pct", "  broker CPU % (connecting)", ".0f"),
    ("idle", "client_cpu_pct", "  busiest client process CPU %", ".0f"),
    ("idle", "host_cpu_pct", "  host CPU % (all cores, all users)", ".0f"),
    ("idle", "others_cpu_pct", "  other users' CPU % (of one core)", ".0f"),
]

#: The figure each workload's losses are checked on (lost deliveries, failed or dropped connections).
LOSS_FIGURES = ("lost", "publish_errors", "connections_lost", "dropped_while_idle")


def ratios(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """``{"mqchat/mosquitto": {"one-to-one.msgs_per_s": 0.1, ...}, ...}``: value ÷ base value."""
    out: dict[str, dict[str, float]] = {}
    for base in BASES:
        for target in TARGETS:
            if target == base or target not in results or base not in results:
                continue
            if TARGETS.index(target) < TARGETS.index(base):
                continue
            pair: dict[str, float] = {}
            for workload, figure, _, _ in ROWS:
                a = results[target].get(workload, {}).get(figure)
                b = results[base].get(workload, {}).get(figure)
                if isinstance(a, int | float) and isinstance(b, int | float) and b:
                    pair[f"{workload}.{figure}"] = round(a / b, 3)
            out[f"{target}/{base}"] = pair
    return out


def table(results: dict[str, dict[str, dict[str, Any]]], p: Params) -> Table:
    present = [t for t in TARGETS if t in results]
    pairs = [f"{t}/{b}" for b in BASES for t in present if b in present and TARGETS.index(t) > TARGETS.index(b)]
    rs = ratios(results)
    t = Table(title="MQTT broker benchmark (ratio = value ÷ base)", title_justify="left")
    t.add_column("figure")
    for name in present:
        t.add_column(name, justify="right")
    for pair in pairs:
        t.add_column(pair.replace("/", " ÷ "), justify="right", style="cyan")
    labels = {"subs": p.fanout_subscribers, "rate": p.rate, "lsubs": p.latency_subscribers, "conns": p.conns}
    for workload, figure, label, fmt in ROWS:
        if not any(workload in results[n] for n in present):
            continue
        cells = []
        for name in present:
            r = results[name].get(workload)
            if r is None:
                cells.append("—")
            elif "error" in r:
                cells.append("[red]error[/red]")
            else:
                v = r.get(figure)
                cells.append(format(v, fmt) if isinstance(v, int | float) else "—")
        for pair in pairs:
            v = rs.get(pair, {}).get(f"{workload}.{figure}")
            cells.append(f"{v:.2f}" if v is not None else "—")
        t.add_row(label.format(**labels), *cells)
    return t


# ----------------------------------------------------------------------------------------- main


def run(targets: list[str], workloads: list[str], p: Params, console: Console,
        profile_dir: Path | None = None) -> dict[str, Any]:
    results: dict[str, dict[str, dict[str, Any]]] = {}
    limits: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="mqchat-bench-") as tmp, \
            Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     console=console, transient=True) as progress:
        # Workload by workload, every target in turn: load from other users of the host then falls
        # on the targets alike, not on whichever ran last.
        for workload in workloads:
            for target in targets:
                workdir = Path(tmp) / f"{target}-{workload}"
                step = progress.add_task(f"{target}: {workload}", total=None)
                try:
                    with running(target, workdir) as broker:
                        limits[target] = broker.nofile_limit()
                        profiled = profile_dir is not None and target != "mosquitto"
                        out = (profile_dir or Path()) / f"{target}-{workload}.txt"
                        with profile_mod.recording(broker.pid, out) if profiled else contextlib.nullcontext():
                            figures = RUNNERS[workload](broker, p, progress)
                        if profiled and out.exists():
                            figures["profile"] = str(out)
                        if not broker.alive():
                            figures["broker_exit"] = broker.proc.returncode
                except (WorkerFailed, RuntimeError, OSError) as exc:
                    log = next(workdir.glob("*.log"), None)
                    figures = {"error": str(exc),
                               "broker_log_tail": log.read_text(errors="replace")[-2000:] if log else ""}
                finally:
                    progress.remove_task(step)
                results.setdefault(target, {})[workload] = figures
                console.print(_summary_line(target, workload, figures))
    return {
        "meta": {
            "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": sys.version.split()[0],
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "amqtt": metadata.version("amqtt"), "mosquitto": _mosquitto_version(),
            "params": p.__dict__, "broker_nofile_limit": limits, "git": _git_state(),
        },
        "results": results,
        "ratios": ratios(results),
    }


def print_profiles(results: dict[str, dict[str, dict[str, Any]]], console: Console) -> None:
    for target, by_workload in results.items():
        for workload, figures in by_workload.items():
            if "profile" not in figures:
                continue
            t = Table(title=f"{target} {workload}: where the broker's samples landed ({figures['profile']})",
                      title_justify="left")
            t.add_column("function")
            t.add_column("self %", justify="right")
            t.add_column("total %", justify="right")
            for name, own, total in profile_mod.top_functions(Path(figures["profile"])):
                t.add_row(name, f"{own:.1f}", f"{total:.1f}")
            console.print(t)


def _git_state() -> dict[str, Any] | None:
    """The commit measured, and the broker files that differ from it (the broker is being rewritten)."""
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=targets_mod.ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "broker", "mqchat"], cwd=targets_mod.ROOT,
                               capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": commit, "uncommitted_broker_files": [line[3:] for line in dirty]}


def _mosquitto_version() -> str | None:
    import subprocess

    binary = mosquitto_binary()
    if binary is None:
        return None
    out = subprocess.run([binary, "-h"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0].removeprefix("mosquitto version ").strip() if out else None


def _summary_line(target: str, workload: str, f: dict[str, Any]) -> str:
    if "error" in f:
        return f"[red]{target} {workload}: {f['error']}[/red]"
    losses = {k: f[k] for k in LOSS_FIGURES if f.get(k)}
    if f.get("failures"):
        losses["failures"] = f["failures"]
    extra = f"  [yellow]{losses}[/yellow]" if losses else ""
    if workload == "idle":
        main = (f"{f['connected']:,} connected in {f['seconds']:.1f}s ({f['conns_per_s']:,.0f}/s), "
                f"RSS +{f['rss_per_conn_kib']:.1f} KiB/conn")
    elif workload == "latency":
        main = f"p50 {f['latency_p50_ms']:.2f} ms, p99 {f['latency_p99_ms']:.2f} ms, max {f['latency_max_ms']:.1f} ms"
    else:
        main = f"{f['msgs_per_s']:,.0f} msgs/s, {f['deliveries_per_s']:,.0f} deliveries/s"
    return (f"{target:>9} {workload:<10} {main}; CPU: broker {f['broker_cpu_pct']:.0f}%, "
            f"busiest client {f['client_cpu_pct']:.0f}%, host {f['host_cpu_pct']:.0f}% of {os.cpu_count()} "
            f"(others {f['others_cpu_pct']:.0f}%){extra}")


def _names(value: str, allowed: tuple[str, ...]) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(allowed)}")
    return names


def parser() -> argparse.ArgumentParser:
    d = Params()
    ap = argparse.ArgumentParser(prog="python -m bench.broker", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", type=lambda v: _names(v, TARGETS), default=list(TARGETS),
                    help=f"comma-separated, from {','.join(TARGETS)} (default: all; mosquitto is skipped if absent)")
    ap.add_argument("--workloads", type=lambda v: _names(v, WORKLOADS), default=list(WORKLOADS),
                    help=f"comma-separated, from {','.join(WORKLOADS)} (default: all)")
    for name in WORKLOADS:
        ap.add_argument(f"--no-{name}", action="store_true", help=f"skip the {name} workload")
    ap.add_argument("--quick", action="store_true", help="small counts (for CI): " + ", ".join(
        f"{k}={v}" for k, v in QUICK.items()))
    ap.add_argument("--messages", type=int, help=f"most messages per throughput workload (default {d.messages})")
    ap.add_argument("--seconds", type=float, help=f"longest publishing time per throughput workload "
                    f"(default {d.seconds})")
    ap.add_argument("--window", type=int, help=f"PUBLISHes waiting for PUBACK (default {d.window})")
    ap.add_argument("--backlog", type=int, help=f"most messages ahead of the slowest subscriber (default {d.backlog})")
    ap.add_argument("--subscribers", type=int, dest="fanout_subscribers",
                    help=f"fan-out subscribers (default {d.fanout_subscribers})")
    ap.add_argument("--sub-procs", type=int, help=f"fan-out subscriber processes (default {d.sub_procs})")
    ap.add_argument("--rate", type=float, help=f"latency workload: offered msg/s (default {d.rate:.0f})")
    ap.add_argument("--latency-seconds", type=float, help=f"latency workload length (default {d.latency_seconds})")
    ap.add_argument("--latency-subscribers", type=int, help=f"(default {d.latency_subscribers})")
    ap.add_argument("--poisson", action="store_true", help="latency workload: Poisson arrivals, not even pacing")
    ap.add_argument("--conns", type=int, help=f"idle connections (default {d.conns:,})")
    ap.add_argument("--conn-procs", type=int, help=f"client processes opening them (default {d.conn_procs})")
    ap.add_argument("--connect-concurrency", type=int,
                    help=f"CONNECTs in flight at once, over all processes (default {d.connect_concurrency})")
    ap.add_argument("--payload", type=int, help=f"payload bytes (default {d.payload}, at least 8)")
    ap.add_argument("--json", type=Path, metavar="PATH", help="also write the figures as JSON")
    ap.add_argument("--profile", type=Path, metavar="DIR", help="sample the Python brokers with py-spy during each "
                    "workload; collapsed stacks go to DIR, the top functions are printed")
    return ap


def params_from(args: argparse.Namespace) -> Params:
    values: dict[str, Any] = dict(QUICK) if args.quick else {}
    for name in Params.__dataclass_fields__:
        v = getattr(args, name, None)
        if v is not None and v is not False:
            values[name] = v
    return Params(**values)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)
    p = params_from(args)
    workloads = [w for w in args.workloads if not getattr(args, "no_" + w.replace("-", "_"))]
    targets = [t for t in args.targets if targets_mod.available(t)]
    for t in args.targets:
        if t not in targets:
            console.print(f"[yellow]{t} is not installed; skipping it[/yellow]")
    if not targets or not workloads:
        console.print("[red]nothing to run[/red]")
        return 2
    nofile = raise_fd_limit()
    if "idle" in workloads and nofile < p.conns + 100:
        console.print(f"[yellow]open-files limit is {nofile}: the broker may not hold {p.conns:,} connections"
                      "[/yellow]")
    console.print(f"targets {', '.join(targets)}; workloads {', '.join(workloads)}; {os.cpu_count()} CPUs; "
                  f"open-files limit {nofile}")
    if args.profile and profile_mod.py_spy() is None:
        console.print("[yellow]py-spy is not installed (pip install py-spy); not profiling[/yellow]")
        args.profile = None
    report = run(targets, workloads, p, console, args.profile)
    console.print(table(report["results"], p))
    if args.profile:
        print_profiles(report["results"], console)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
        console.print(f"figures written to {args.json}")
    errors = [f"{t}/{w}" for t, ws in report["results"].items() for w, f in ws.items() if "error" in f]
    if errors:
        console.print(f"[red]failed: {', '.join(errors)}[/red]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
