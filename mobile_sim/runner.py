"""One scenario run, start to verdict: the frame every scenario shares.

1. the system: started here (``mqchat up`` on free ports in a temporary directory, optionally
   over Mosquitto and with the push stand-ins), or the one at ``--api`` / ``--mqtt``;
2. the fleet and a monitor (once a second: CPU and RSS of every process from ``/proc``, the
   fleet's counters, the live progress display);
3. the scenario (:mod:`mobile_sim.scenarios`);
4. a quiet period, then a final sync on every device, presence and badges as seen at the end;
5. the checker (:func:`mobile_sim.checker.check`) over everything recorded;
6. the report: a summary table, ``--json``, and PNG plots in ``--out``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from harness.ports import raise_fd_limit
from mobile_sim import checker, plots, report, system
from mobile_sim.fleet import Fleet, FleetConfig
from mobile_sim.mqtt import ConnectionLost
from mobile_sim.observe import Observations
from mobile_sim.reconnect import Backoff
from mobile_sim.scenarios import EMBEDDED_ONLY, SCENARIOS, Ctx, Options, pcts

logger = logging.getLogger(__name__)


@dataclass
class RunConfig:
    scenario: str
    options: Options
    fleet: FleetConfig
    transport: system.Transport = "embedded"
    api: str | None = None
    mqtt: str | None = None
    jwt_secret: str | None = None
    out: Path | None = None
    json: Path | None = None
    progress: str = "off"
    """``live`` (a rich display, for a terminal), ``lines`` (a status line every 10 s) or ``off``."""
    keep: Path | None = None


@contextlib.contextmanager
def target_for(cfg: RunConfig) -> Iterator[system.Target]:
    if cfg.api:
        if not cfg.mqtt:
            raise ValueError("--api needs --mqtt HOST:PORT")
        host, _, port = cfg.mqtt.rpartition(":")
        yield system.Target(api=cfg.api.rstrip("/"), mqtt_host=host or "127.0.0.1", mqtt_port=int(port),
                            jwt_secret=cfg.jwt_secret or os.environ.get("MQCHAT_AUTH__SECRET"),
                            transport=cfg.transport)
        return
    with system.start(transport=cfg.transport, push=cfg.scenario == "push", keep=cfg.keep) as target:
        yield target


class Monitor:
    """Once a second: process CPU/RSS, the fleet's counters, the progress display."""

    def __init__(self, fleet: Fleet, sampler: system.ProcessSampler, ctx: Ctx, console: Console, mode: str) -> None:
        self.fleet, self.sampler, self.ctx, self.console, self.mode = fleet, sampler, ctx, console, mode
        self.points: list[dict[str, Any]] = []
        self._last: dict[str, int] = {}
        self._recent: tuple[dict[str, float], dict[str, float]] = ({}, {})

    async def run(self) -> None:
        live = Live(self._table(), console=self.console, refresh_per_second=2, transient=True) \
            if self.mode == "live" else None
        with live if live is not None else contextlib.nullcontext():
            while True:
                await asyncio.sleep(1.0)
                self.tick()
                if live is not None:
                    live.update(self._table())
                elif self.mode == "lines" and len(self.points) % 10 == 0:
                    self.console.print(self._line(), markup=False, highlight=False)

    def _line(self) -> str:
        c = self.fleet.counters()
        p = self.points[-1]
        phase = self.ctx.phases[-1][0] if self.ctx.phases else "starting"
        cpu = " ".join(f"{k} {v:.0f}%" for k, v in sorted(p["cpu"].items()))
        return (f"[{len(self.points):>5} s] {phase}: online {c['online']:,} connecting {c['connecting']:,} "
                f"sent {c['sent']:,} acked {c['acked']:,} live {c['live']:,} syncs {c['syncs']:,} | {cpu}")

    def tick(self) -> None:
        now = time.monotonic()
        self.sampler.sample(now)
        last = self.sampler.series[-1] if self.sampler.series else {}
        cpu = {k: round(v, 1) for k, v in last.items() if k != "t"}
        c = self.fleet.counters()
        ready = sum(1 for d in self.fleet.devices.values() if d.ready)
        self.points.append({"t": now, "online": c["online"], "ready": ready, "cpu": cpu,
                            **{k: c[k] for k in ("sent", "acked", "live")}})
        self._recent = (pcts(self.fleet.recent_ack_ms), pcts(self.fleet.recent_deliver_ms))
        self.fleet.recent_ack_ms.clear()
        self.fleet.recent_deliver_ms.clear()

    def _table(self) -> Table:
        c = self.fleet.counters()
        t = Table(title=f"mobile_sim {self.ctx.phases[-1][0] if self.ctx.phases else 'starting'}", show_header=True)
        for col in ("online", "connecting", "sent/s", "acked/s", "live/s", "ack p99", "deliver p99", "CPU %"):
            t.add_column(col, justify="right")
        rate = {k: c[k] - self._last.get(k, c[k]) for k in ("sent", "acked", "live")}
        self._last = c
        ack, dl = self._recent
        cpu = self.points[-1]["cpu"] if self.points else {}
        t.add_row(f"{c['online']:,}", f"{c['connecting']:,}", f"{rate['sent']:,}", f"{rate['acked']:,}",
                  f"{rate['live']:,}", f"{ack.get('p99', '—')}", f"{dl.get('p99', '—')}",
                  " ".join(f"{k} {v:.0f}" for k, v in sorted(cpu.items())))
        return t


async def run(cfg: RunConfig, console: Console) -> tuple[dict[str, Any], int]:
    """Run one scenario; returns the report and the exit status (1: the checker found violations)."""
    if cfg.scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {cfg.scenario!r}; one of {', '.join(SCENARIOS)}")
    if cfg.scenario in EMBEDDED_ONLY and cfg.transport != "embedded":
        raise ValueError(f"{cfg.scenario} needs presence, which only the embedded broker maintains "
                         "(use --transport embedded)")
    opts = cfg.options
    if cfg.scenario == "push":
        opts = dataclasses.replace(opts, quiet=max(opts.quiet, 6.0))
    fd_limit = raise_fd_limit()
    asyncio.get_running_loop().set_exception_handler(_quiet_lost_futures)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    with target_for(cfg) as target:
        if cfg.scenario == "push" and target.push is None:
            raise ValueError("the push scenario needs the stand-ins: let it start its own system")
        obs = Observations(push_expected=cfg.scenario == "push")
        async with Fleet(target, obs, cfg.fleet, seed=opts.seed) as fleet:
            ctx = Ctx(fleet, opts, fleet.rng)
            if target.push is not None:
                fleet.watch_pushes(target.push)
            sampler = system.ProcessSampler(target)
            monitor = Monitor(fleet, sampler, ctx, console, cfg.progress)
            t0 = time.monotonic()
            sampler.sample(t0)
            cpu0 = time.process_time()
            mon = fleet.spawn(monitor.run(), "monitor")
            result = await SCENARIOS[cfg.scenario](ctx)
            ctx.phase("quiet")
            finish = await fleet.finish(opts.quiet, badge_sample=opts.badge_sample, drain_timeout_s=opts.drain_timeout)
            ctx.phase("end")
            monitor.tick()
            mon.cancel()
            sim_cpu = time.process_time() - cpu0
            wall = time.monotonic() - t0
            devices = len(fleet.devices)
            processes = sampler.summary()
            verdict = checker.check(obs)
            ack_ms, deliver_ms, timed = report.latencies(obs)
            rep: dict[str, Any] = {
                "scenario": cfg.scenario, "started": started, "transport": target.transport, "devices": devices,
                "options": dataclasses.asdict(opts),
                "fleet": {**dataclasses.asdict(cfg.fleet), "backoff": dataclasses.asdict(cfg.fleet.backoff)},
                "target": {"api": target.api, "mqtt": f"{target.mqtt_host}:{target.mqtt_port}",
                           "started_here": target.root_pid is not None},
                "provision": {**fleet.prov.stats,
                              "path": "bulk + minted tokens" if fleet.prov.fast else "signup + login",
                              "http_calls": fleet.http.calls, "http_retries": fleet.http.retries},
                "result": result, "finish": finish,
                "latency": {"send_to_ack_ms": pcts(ack_ms), "send_to_deliver_ms": pcts(deliver_ms)},
                "throughput": report.throughput(obs),
                "processes": processes,
                "simulator": {"cpu_pct": round(100 * sim_cpu / wall, 1), "cpu_s": round(sim_cpu, 1),
                              "cpu_ms_per_device": round(1000 * sim_cpu / max(1, devices), 2),
                              "open_files_limit": fd_limit},
                "counters": fleet.counters(),
                "failures": dict(fleet.failures), "stops": dict(fleet.stops),
                "phases": [(name, round(t - t0, 2)) for name, t in ctx.phases],
                "series": report.series(obs, timed, monitor.points, t0),
                "checker": verdict,
            }
    rep["checker"], status = judged(rep["checker"])
    if cfg.out is not None:
        rep["plots"] = [str(p) for p in plots.write(rep, ack_ms, deliver_ms, cfg.out)]
        report.write_json(rep, cfg.out / "report.json")
    if cfg.json is not None:
        report.write_json(rep, cfg.json)
    return rep, status


def judged(verdict: checker.Verdict) -> tuple[dict[str, Any], int]:
    """The checker's verdict as the report holds it, and the run's exit status (1: violations)."""
    return ({"ok": verdict.ok, "summary": verdict.summary(), "counts": dataclasses.asdict(verdict.counts),
             "violations": [dataclasses.asdict(x) for x in verdict.violations[:500]],
             "violations_total": len(verdict.violations)}, 0 if verdict.ok else 1)


def _quiet_lost_futures(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A publish future failed by a closed connection and never awaited is expected (the outbox
    handles it); anything else goes to the default handler."""
    if isinstance(context.get("exception"), ConnectionLost) and "never retrieved" in context.get("message", ""):
        return
    loop.default_exception_handler(context)


def fleet_config(*, keepalive: int, ack_timeout: float, backoff_base: float, backoff_cap: float,
                 max_attempts: int, http_connections: int, sync_concurrency: int) -> FleetConfig:
    return FleetConfig(keepalive_s=keepalive, ack_timeout_s=ack_timeout,
                       backoff=Backoff(backoff_base, backoff_cap, max_attempts),
                       http_connections=http_connections, sync_concurrency=sync_concurrency)
