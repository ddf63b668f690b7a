"""``python -m mobile_sim bench``: the end-to-end benchmark (see :mod:`mobile_sim.bench`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mobile_sim.bench import Load, ratios, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mobile_sim", description="mqchat simulator and benchmark")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="full pipeline vs bare amqtt vs bare Mosquitto, same clients and load")
    b.add_argument("--channels", type=int, default=10)
    b.add_argument("--members", type=int, default=5, help="devices per channel; each one sends")
    b.add_argument("--messages", type=int, default=2000, help="sends in total")
    b.add_argument("--rate", type=float, default=0, help="offered sends/s in total; 0 = closed loop")
    b.add_argument("--window", type=int, default=20, help="sends in flight per device")
    b.add_argument("--targets", default="mqchat,amqtt,mosquitto")
    b.add_argument("--json", type=Path, help="also write the results here")
    pr = sub.add_parser("presence", help="connect/disconnect churn: presence latency and Redis cost")
    pr.add_argument("--users", type=int, default=50)
    pr.add_argument("--cycles", type=int, default=10)
    pu = sub.add_parser("push", help="push fan-out decisions/s and pushes/s against the FCM/APNs stand-ins")
    pu.add_argument("--members", type=int, default=10_000, help="members of the fanned-out channel")
    pu.add_argument("--jobs", type=int, default=3, help="messages fanned out")
    pu.add_argument("--pushes", type=int, default=2000, help="pushes sent per platform")
    args = p.parse_args(argv)
    if args.command == "push":
        from mobile_sim import push_bench

        with Console(stderr=True).status(f"push: fan-out to {args.members} members, {args.pushes} pushes/platform"):
            report = push_bench.run(args.members, args.jobs, args.pushes)
        print(json.dumps(report, indent=2))
        return 0
    if args.command == "presence":
        from mobile_sim import presence_bench

        with Console(stderr=True).status(f"presence churn: {args.users} users x {args.cycles} cycles"):
            report = asyncio.run(presence_bench.run(args.users + 1, args.cycles))
        print(json.dumps(report, indent=2))
        return 0

    load = Load(args.channels, args.members, args.messages, args.rate, args.window)
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
        table.add_row(*(str(s[c]) for c in cols))
    Console(width=200).print(table)
    rat = ratios(results)
    for k, v in rat.items():
        print(f"{k}: {v}")
    if args.json:
        args.json.write_text(json.dumps({"load": vars(args) | {"json": str(args.json)}, "results": summaries,
                                         "ratios": rat}, indent=2, default=str))
    lost = [s["target"] for s in summaries if s["delivered"] < s["expected_deliveries"]]
    if lost:
        print(f"incomplete delivery on: {', '.join(lost)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
