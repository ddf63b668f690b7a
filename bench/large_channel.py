"""Large-channel benchmark (``python -m bench.large_channel --members 5000,10000``): one channel of
N members, a few senders, through the whole system, for each size in one run.

Each size is one ``mobile_sim`` large-channel run (:func:`mobile_sim.runner.run`, the scenario of
``python -m mobile_sim run large-channel``): a fresh system (``mqchat up`` on free loopback ports,
embedded broker) in a temporary directory, ``members`` simulated devices (one per user) in one
channel, ``senders`` of them sending ``rate`` messages/s in total for ``duration`` seconds, a quiet
period, a final sync, the checker. Reported per size:

- ``live_ratio``: required (acked message, member device) deliveries that arrived live, not by sync;
- ``deliver_ms``: send → live delivery, every delivery (p50/p99);
- ``last_member_ms``: send → the last member reached live, per message (p50/max);
- ``ack_ms``: send → the sender's own ack (p50/p99);
- ``broker_us_per_delivery``: the broker process's CPU (``/proc``, sampled once a second) from the
  start of the traffic to the end of the quiet period, over the live deliveries;
- ``checker_ok``: no acked message lost, no invariant broken.

Targets (issue #19): live ≥ 99.9 %, deliver p99 ≤ 500 ms, ack p99 ≤ 100 ms, broker CPU ≤ 15 µs per
delivery. Every run is bounded (``duration`` + quiet + the simulator's drain timeout) and stops
by itself; ``--quick`` is a 200-member, 5-second run for tests.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from mobile_sim import runner
from mobile_sim.scenarios import Options

#: Targets per size (issue #19), as (report key, bound, higher is better).
TARGETS: dict[str, tuple[float, bool]] = {
    "live_ratio": (0.999, True),
    "deliver_p99_ms": (500.0, False),
    "ack_p99_ms": (100.0, False),
    "broker_us_per_delivery": (15.0, False),
}


@dataclasses.dataclass(frozen=True)
class Params:
    sizes: tuple[int, ...]
    senders: int = 5
    rate: float = 2.0
    duration: float = 30.0
    quiet: float = 3.0
    drain_timeout: float = 60.0
    seed: int | None = 19


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.large_channel", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--members", default="5000,10000", help="channel sizes, comma-separated (one run each)")
    p.add_argument("--senders", type=int, default=5)
    p.add_argument("--rate", type=float, default=2.0, help="messages/s offered in total")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of traffic per size")
    p.add_argument("--quiet", type=float, default=3.0, help="quiet seconds before the final sync")
    p.add_argument("--drain-timeout", type=float, default=60.0, help="longest wait for the system to go quiet")
    p.add_argument("--seed", type=int, default=19)
    p.add_argument("--quick", action="store_true", help="one small, short run (200 members, 5 s): for tests")
    p.add_argument("--json", type=Path, help="write every figure here")
    return p


def params_from(args: argparse.Namespace) -> Params:
    if args.quick:
        return Params(sizes=(200,), senders=2, rate=2.0, duration=5.0, quiet=2.0, drain_timeout=30.0, seed=args.seed)
    try:
        sizes = tuple(int(x) for x in str(args.members).split(",") if x.strip())
    except ValueError:
        parser().error(f"--members must be integers, comma-separated: {args.members!r}")
    if not sizes or min(sizes) < 2:
        parser().error(f"every --members size must be at least 2: {args.members!r}")
    return Params(sizes=sizes, senders=args.senders, rate=args.rate, duration=args.duration, quiet=args.quiet,
                  drain_timeout=args.drain_timeout, seed=args.seed)


def figures(rep: dict[str, Any], members: int) -> dict[str, Any]:
    """The figures of one run, from the simulator's report."""
    counts = rep["checker"]["counts"]
    expected = counts["expected"]
    live = max(0, counts["live"] - counts["live_redeliveries"])
    phases = dict(rep["phases"])
    start = float(phases.get("traffic") or 0.0)
    end = float(phases.get("end") or phases.get("quiet") or 0.0)
    broker_cpu_s = 0.0
    prev_t: float | None = None
    for point in rep["series"]:
        t = point["t"]
        if start < t <= end + 1.0 and prev_t is not None:
            broker_cpu_s += (point["cpu"].get("broker", 0.0) / 100) * (t - prev_t)
        prev_t = t
    live_window = rep["throughput"]["live_deliveries"]
    fanout = rep["result"].get("fanout", {})
    last = fanout.get("all_members_ms", {})
    ack = rep["latency"]["send_to_ack_ms"]
    deliver = rep["latency"]["send_to_deliver_ms"]
    return {
        "members": members,
        "messages": fanout.get("messages"),
        "complete_live": fanout.get("complete_live"),
        "expected_deliveries": expected,
        "live_deliveries": live,
        "live_ratio": round(live / expected, 5) if expected else None,
        "deliver_p50_ms": deliver.get("p50"), "deliver_p99_ms": deliver.get("p99"),
        "last_member_p50_ms": last.get("p50"), "last_member_max_ms": last.get("max"),
        "ack_p50_ms": ack.get("p50"), "ack_p99_ms": ack.get("p99"),
        "broker_cpu_s": round(broker_cpu_s, 2),
        "broker_us_per_delivery": round(1e6 * broker_cpu_s / live_window, 2) if live_window else None,
        "checker_ok": rep["checker"]["ok"],
        "checker": rep["checker"]["summary"],
        "load_1m": os.getloadavg()[0],
        "processes": rep["processes"],
    }


def met(row: dict[str, Any]) -> dict[str, bool | None]:
    out: dict[str, bool | None] = {}
    for key, (bound, higher) in TARGETS.items():
        value = row.get(key)
        out[key] = None if value is None else (value >= bound if higher else value <= bound)
    out["checker_ok"] = bool(row.get("checker_ok"))
    return out


async def run_size(p: Params, members: int, console: Console) -> dict[str, Any]:
    opts = Options(members=members, senders=p.senders, rate=p.rate, duration=p.duration, quiet=p.quiet,
                   drain_timeout=p.drain_timeout, seed=p.seed)
    fleet = runner.fleet_config(keepalive=60, ack_timeout=5.0, backoff_base=0.5, backoff_cap=30.0, max_attempts=0,
                                http_connections=32, sync_concurrency=24)
    cfg = runner.RunConfig("large-channel", opts, fleet, progress="off")
    rep, _ = await runner.run(cfg, console)
    return figures(rep, members)


def print_table(rows: list[dict[str, Any]], console: Console) -> None:
    from rich.table import Table

    t = Table(title="large channel: one channel, N members (targets: live ≥ 99.9 %, deliver p99 ≤ 500 ms, "
              "ack p99 ≤ 100 ms, broker ≤ 15 µs/delivery)")
    for col in ("members", "msgs", "live %", "deliver p50/p99 ms", "last member p50/max ms", "ack p50/p99 ms",
                "broker µs/deliv", "checker", "load 1m"):
        t.add_column(col, justify="right")

    def ms(a: Any, b: Any) -> str:
        return f"{a if a is not None else '—'} / {b if b is not None else '—'}"

    for r in rows:
        ratio = f"{100 * r['live_ratio']:.2f}" if r["live_ratio"] is not None else "—"
        t.add_row(f"{r['members']:,}", str(r["messages"]), ratio, ms(r["deliver_p50_ms"], r["deliver_p99_ms"]),
                  ms(r["last_member_p50_ms"], r["last_member_max_ms"]), ms(r["ack_p50_ms"], r["ack_p99_ms"]),
                  str(r["broker_us_per_delivery"]), "clean" if r["checker_ok"] else "VIOLATIONS",
                  f"{r['load_1m']:.1f}")
    console.print(t)


async def amain(p: Params, console: Console) -> list[dict[str, Any]]:
    rows = []
    for members in p.sizes:
        console.print(f"large channel: {members:,} members, {p.senders} senders, {p.rate} msg/s, {p.duration:.0f} s "
                      f"(load {os.getloadavg()[0]:.1f})")
        row = await run_size(p, members, console)
        row["targets_met"] = met(row)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    p = params_from(args)
    console = Console(stderr=True)
    try:
        import uvloop
    except ImportError:
        rows = asyncio.run(amain(p, console))
    else:
        rows = uvloop.run(amain(p, console))
    print_table(rows, Console(width=160))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"params": dataclasses.asdict(p), "rows": rows}, indent=2, default=str))
    return 0 if all(r["checker_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
