"""What a run measured, from its :class:`~mobile_sim.observe.Observations`: latencies, rates, time
series, and the human summary.

Latencies are per send (send→ack: the bridge's ack, not the PUBACK) and per live delivery
(send→deliver: every member device that got the message on its stream, the sender's own devices
included). A send's clock starts when the user pressed send, so a message written while the device
was offline counts its wait in the outbox.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mobile_sim.observe import Observations
from mobile_sim.scenarios import pcts


def latencies(obs: Observations) -> tuple[list[float], list[float], list[tuple[float, float]]]:
    """``(send→ack ms, send→deliver ms, (delivery time, ms) pairs)``."""
    by_cmid = {s.cmid: s for s in obs.sends}
    ack = [(s.t_ack - s.t_first) * 1000 for s in obs.sends if s.t_ack is not None]
    timed = []
    for d in obs.deliveries:
        if d.via != "live" or d.cmid is None:
            continue
        s = by_cmid.get(d.cmid)
        if s is not None:
            timed.append((d.t, (d.t - s.t_first) * 1000))
    return ack, [ms for _, ms in timed], timed


def throughput(obs: Observations) -> dict[str, float]:
    """Acked messages and live deliveries per second, from the first send to the last of each."""
    if not obs.sends:
        return {"acked_per_s": 0.0, "deliveries_per_s": 0.0, "seconds": 0.0}
    t0 = min(s.t_first for s in obs.sends)
    acks = [s.t_ack for s in obs.sends if s.t_ack is not None]
    live = [d.t for d in obs.deliveries if d.via == "live" and d.t >= t0]
    span_a = (max(acks) - t0) if acks else 0.0
    span_d = (max(live) - t0) if live else 0.0
    return {"acked": len(acks), "acked_per_s": round(len(acks) / span_a, 1) if span_a else 0.0,
            "live_deliveries": len(live), "deliveries_per_s": round(len(live) / span_d, 1) if span_d else 0.0,
            "seconds": round(max(span_a, span_d), 2)}


def series(obs: Observations, timed: list[tuple[float, float]], monitor: list[dict[str, Any]], t0: float,
           step: float = 1.0) -> list[dict[str, Any]]:
    """One point per ``step`` seconds since ``t0``: live deliveries/s, acks/s, sends/s, the deliver
    latency p50/p99 of that second, devices connected and resumed (subscribed and synced), and CPU
    per process (from the monitor)."""
    buckets: dict[int, dict[str, Any]] = defaultdict(lambda: {"deliveries": 0, "acks": 0, "sends": 0, "lat": []})
    for t, ms in timed:
        b = buckets[int((t - t0) / step)]
        b["deliveries"] += 1
        b["lat"].append(ms)
    for s in obs.sends:
        buckets[int((s.t_first - t0) / step)]["sends"] += 1
        if s.t_ack is not None:
            buckets[int((s.t_ack - t0) / step)]["acks"] += 1
    by_second = {int((m["t"] - t0) / step): m for m in monitor}
    out = []
    for i in range(max([*buckets, *by_second], default=-1) + 1):
        b = buckets.get(i, {"deliveries": 0, "acks": 0, "sends": 0, "lat": []})
        lat = pcts(b["lat"])
        m = by_second.get(i, {})
        out.append({"t": round(i * step, 1), "deliveries_per_s": b["deliveries"] / step,
                    "acks_per_s": b["acks"] / step, "sends_per_s": b["sends"] / step,
                    "deliver_p50_ms": lat.get("p50"), "deliver_p99_ms": lat.get("p99"),
                    "online": m.get("online"), "ready": m.get("ready"), "cpu": m.get("cpu", {})})
    return out


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))


def _ms(p: dict[str, float]) -> str:
    if not p.get("n"):
        return "—"
    return f"{p['p50']:.1f} / {p['p95']:.1f} / {p['p99']:.1f} / {p['max']:.0f}"


def _flat(value: Any) -> str:
    """A nested result as ``key value, …`` lines, percentile dicts as ``p50/p95/p99/max``."""
    if isinstance(value, dict):
        if "p50" in value:
            return f"{_ms(value)} (n={value['n']:,})"
        parts = [f"{k} {_flat(v)}" for k, v in value.items()]
        return "\n".join(parts) if any(isinstance(v, dict) for v in value.values()) else ", ".join(parts)
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def print_summary(report: dict[str, Any], console: Console) -> None:
    """The human table: what ran, latencies, rates, processes, scenario figures, the verdict."""
    t = Table(title=f"mobile_sim {report['scenario']} — {report['devices']:,} devices, "
                    f"transport {report['transport']}", show_header=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    lat = report["latency"]
    t.add_row("send→ack ms (p50/p95/p99/max)",
              f"{_ms(lat['send_to_ack_ms'])}  (n={lat['send_to_ack_ms'].get('n', 0):,})")
    t.add_row("send→deliver ms (p50/p95/p99/max)",
              f"{_ms(lat['send_to_deliver_ms'])}  (n={lat['send_to_deliver_ms'].get('n', 0):,})")
    th = report["throughput"]
    t.add_row("acked msgs/s, live deliveries/s", f"{th['acked_per_s']:,} , {th['deliveries_per_s']:,}")
    conn = report["result"].get("connect")
    if conn:
        t.add_row("connect", f"{conn['devices']:,} devices connected, subscribed and synced in {conn['seconds']} s "
                             f"= {conn['connects_per_s']:,}/s; CONNACKs {conn['connacks_per_s']:,}/s, "
                             f"CONNACK ms {_ms(conn['connect_ms'])}")
        t.add_row("simulator idle CPU", f"{conn['idle_sim_cpu_pct']}% of a core = "
                                        f"{conn['idle_sim_cpu_us_per_device_s']} µs per device per second")
    sim = report["simulator"]
    t.add_row("simulator CPU (whole run)", f"{sim['cpu_pct']}% of a core, {sim['cpu_ms_per_device']} ms per device")
    for role, p in sorted(report["processes"].items()):
        t.add_row(f"  {role}", f"CPU {p['cpu_pct']}% of a core ({p['cpu_s']} s), RSS peak {p['rss_mb']} MB")
    prov = report["provision"]
    t.add_row("provisioning", f"{prov['users']:,} users in {prov['users_s']:.1f} s, {prov['channels']:,} channels in "
                              f"{prov['channels_s']:.1f} s ({prov['path']})")
    for key, value in report["result"].items():
        if key == "connect":
            continue
        t.add_row(key, _flat(value))
    c = report["counters"]
    t.add_row("counters", ", ".join(f"{k} {v:,}" for k, v in c.items() if v))
    console.print(t)
    chk = report["checker"]
    if chk is None:
        console.print("[yellow]checker not available: invariants not judged[/yellow]")
    else:
        console.print(chk["summary"], markup=False, highlight=False)
