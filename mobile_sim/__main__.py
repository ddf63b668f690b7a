"""``python -m mobile_sim run SCENARIO``: a scenario of simulated devices, judged by the checker
(docs/simulator.md).

The benchmarks live in :mod:`bench` (``python -m bench.pipeline``, ``bench.presence``,
``bench.push``, ``bench.broker``); the commands they had here say where they went.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

#: Benchmarks that used to be subcommands here, and their commands now.
MOVED = {"bench": "bench.pipeline", "presence": "bench.presence", "push": "bench.push"}


def add_run_parser(sub: Any) -> None:
    from mobile_sim.scenarios import SCENARIOS, Options

    d = Options()
    r = sub.add_parser("run", help="run a scenario of simulated devices and judge it (docs/simulator.md)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("scenario", choices=sorted(SCENARIOS))
    pop = r.add_argument_group("population")
    pop.add_argument("--devices", type=int, default=d.devices, help="simulated devices")
    pop.add_argument("--devices-per-user", type=int, default=d.devices_per_user)
    pop.add_argument("--channel-size", type=int, default=d.channel_size, help="members per channel")
    pop.add_argument("--channels-per-user", type=int, default=d.channels_per_user)
    pop.add_argument("--servers", type=int, default=d.servers,
                     help="chat: spread the channels over N servers, each channel private and seen through a role")
    pop.add_argument("--members", type=int, default=d.members, help="large-channel: members (one device each)")
    beh = r.add_argument_group("behaviour")
    beh.add_argument("--senders", type=int, default=d.senders, help="devices that send")
    beh.add_argument("--active-channels", type=int, default=d.active_channels,
                     help="every device of the first N channels sends, only there (overrides --senders)")
    beh.add_argument("--rate", type=float, default=d.rate, help="sends/s offered in total (Poisson)")
    beh.add_argument("--burst-prob", type=float, default=d.burst_prob, help="chance a send is a burst")
    beh.add_argument("--burst-size", type=int, default=d.burst_size)
    beh.add_argument("--read-rate", type=float, default=d.read_rate, help="mark-read calls/s in total")
    beh.add_argument("--typing-rate", type=float, default=d.typing_rate, help="typing indicators/s in total")
    beh.add_argument("--rich", type=float, default=d.rich,
                     help="chat: share of sends that are edits, deletes, reactions or thread replies")
    beh.add_argument("--duration", type=float, default=d.duration, help="seconds of traffic")
    beh.add_argument("--connect-rate", type=float, default=d.connect_rate, help="connects/s at start (0: at once)")
    beh.add_argument("--quiet", type=float, default=d.quiet, help="quiet seconds before the final sync")
    beh.add_argument("--drop-rate", type=float, default=d.drop_rate, help="flaky: network losses per device per minute")
    beh.add_argument("--outage", type=float, default=d.outage,
                     help="flaky: longest outage; reconnect-storm: seconds the network stays down")
    beh.add_argument("--warmup", type=float, default=d.warmup, help="reconnect-storm: traffic before the storm")
    beh.add_argument("--offline-fraction", type=float, default=d.offline_fraction, help="push: users in the background")
    beh.add_argument("--cycle", type=float, default=d.cycle, help="presence-churn: mean seconds in one state")
    beh.add_argument("--observers", type=int, default=d.observers, help="presence-churn: devices watching presence")
    beh.add_argument("--badge-sample", type=int, default=d.badge_sample, help="inboxes checked at the end")
    beh.add_argument("--drain-timeout", type=float, default=d.drain_timeout,
                     help="longest wait at the end for outboxes to empty and the system to go quiet")
    beh.add_argument("--idle-measure", type=float, default=d.idle_measure, help="seconds of idle CPU measured")
    beh.add_argument("--seed", type=int, default=None)
    dev = r.add_argument_group("devices")
    dev.add_argument("--keepalive", type=int, default=60)
    dev.add_argument("--ack-timeout", type=float, default=5.0, help="republish an unacked send after this long")
    dev.add_argument("--backoff-base", type=float, default=0.5, help="first reconnect delay bound (full jitter)")
    dev.add_argument("--backoff-cap", type=float, default=30.0, help="longest reconnect delay")
    dev.add_argument("--max-attempts", type=int, default=0, help="give up after N failed connects in a row (0: never)")
    dev.add_argument("--http-connections", type=int, default=32)
    dev.add_argument("--sync-concurrency", type=int, default=24, help="syncs in flight over all devices")
    tgt = r.add_argument_group("system under test")
    tgt.add_argument("--transport", choices=("embedded", "mosquitto"), default="embedded",
                     help="broker of the system started here: embedded, or Mosquitto via `mqchat up --broker`")
    tgt.add_argument("--api", help="HTTP API of a running system (default: start one here)")
    tgt.add_argument("--mqtt", metavar="HOST:PORT", help="its MQTT broker (with --api)")
    tgt.add_argument("--jwt-secret", help="its HS256 secret (with --api): enables bulk provisioning and minted tokens "
                     "(default: $MQCHAT_AUTH__SECRET)")
    tgt.add_argument("--keep", type=Path, help="run the system in this directory and keep it (logs, data)")
    out = r.add_argument_group("output")
    out.add_argument("--out", type=Path, help="write report.json and the PNG plots here")
    out.add_argument("--json", type=Path, help="write the JSON report here")
    out.add_argument("--progress", choices=("live", "lines", "off"), default=None,
                     help="a live display, a status line every 10 s, or nothing (default: live on a terminal)")


def run_command(args: argparse.Namespace) -> int:
    from mobile_sim import report, runner
    from mobile_sim.scenarios import Options

    opts = Options(**{f: getattr(args, f) for f in Options.__dataclass_fields__})
    fleet = runner.fleet_config(keepalive=args.keepalive, ack_timeout=args.ack_timeout,
                                backoff_base=args.backoff_base, backoff_cap=args.backoff_cap,
                                max_attempts=args.max_attempts, http_connections=args.http_connections,
                                sync_concurrency=args.sync_concurrency)
    console = Console(stderr=True)
    progress = args.progress or ("live" if console.is_terminal else "lines")
    cfg = runner.RunConfig(args.scenario, opts, fleet, transport=args.transport, api=args.api, mqtt=args.mqtt,
                           jwt_secret=args.jwt_secret, out=args.out, json=args.json, progress=progress,
                           keep=args.keep)
    try:
        rep, status = _event_loop_run(runner.run(cfg, console))
    except ValueError as exc:
        print(f"mobile_sim: {exc}", file=sys.stderr)
        return 2
    report.print_summary(rep, Console(width=160))
    if rep.get("plots"):
        print("plots: " + ", ".join(rep["plots"]))
    if status:
        print(f"{rep['checker']['violations_total']} invariant violations (see above)", file=sys.stderr)
    return int(status)


def _event_loop_run(coro: Any) -> Any:
    """uvloop when available: the simulator's own CPU per device is what limits a big fleet."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in MOVED:
        print(f"mobile_sim: the {argv[0]} benchmark moved: python -m {MOVED[argv[0]]}", file=sys.stderr)
        return 2
    p = argparse.ArgumentParser(prog="python -m mobile_sim", description="mqchat simulator (benchmarks: python -m "
                                "bench.pipeline, bench.presence, bench.push, bench.broker)")
    sub = p.add_subparsers(dest="command", required=True)
    add_run_parser(sub)
    args = p.parse_args(argv)
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
