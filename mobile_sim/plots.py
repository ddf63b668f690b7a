"""PNG plots of a run (matplotlib, no display needed).

- ``latency.png``: histograms of send→ack and send→deliver latency, side by side (log-spaced bins), with the
  p50 and p99 marked;
- ``timeseries.png``: per second, live deliveries/s and acks/s; send→deliver p50 and p99; devices
  connected and resumed; with the scenario's phases (connect, traffic, storm, …) as vertical lines.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def write(report: dict[str, Any], ack_ms: list[float], deliver_ms: list[float], out: Path) -> list[Path]:
    """Write the plots into ``out``; returns their paths (none if matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    out.mkdir(parents=True, exist_ok=True)
    title = f"{report['scenario']}: {report['devices']:,} devices ({report['transport']})"
    written = []

    fig, axes_h = plt.subplots(1, 2, figsize=(12, 4.5), sharex=True)
    values = [x for x in ack_ms + deliver_ms if x > 0]
    lo, hi = (max(0.1, min(values)), max(values)) if values else (0.1, 1.0)
    bins: Any = [lo * (hi / lo) ** (i / 60) for i in range(61)] if hi > lo else 30
    for ax, (name, xs, color) in zip(axes_h, (("send→ack", ack_ms, "tab:blue"),
                                              ("send→deliver", deliver_ms, "tab:orange")), strict=True):
        if xs:
            ax.hist(xs, bins=bins, color=color, alpha=0.8)
            s = sorted(xs)
            top = ax.get_ylim()[1]
            for p, style, y in ((50, "--", 0.92), (99, ":", 0.82)):
                v = s[min(len(s) - 1, int(p / 100 * len(s)))]
                ax.axvline(v, color="black", linestyle=style, linewidth=1)
                ax.text(v, top * y, f" p{p} {v:.1f} ms", fontsize=8)
        if hi > lo:
            ax.set_xscale("log")
        ax.set_xlabel("latency (ms)")
        ax.set_ylabel("count")
        ax.set_title(f"{name} (n={len(xs):,})")
    fig.suptitle(f"{title} — latency")
    fig.tight_layout()
    path = out / "latency.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    pts = report["series"]
    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    ts = [p["t"] for p in pts]
    axes[0].plot(ts, [p["deliveries_per_s"] for p in pts], label="live deliveries/s")
    axes[0].plot(ts, [p["acks_per_s"] for p in pts], label="acks/s")
    axes[0].set_ylabel("per second")
    axes[0].legend(loc="upper left")
    for key, label in (("deliver_p50_ms", "send→deliver p50"), ("deliver_p99_ms", "send→deliver p99")):
        ys = [p[key] if p[key] is not None else math.nan for p in pts]
        axes[1].plot(ts, ys, label=label)
    if any(p["deliver_p99_ms"] for p in pts):
        axes[1].set_yscale("log")
    axes[1].set_ylabel("ms")
    axes[1].legend(loc="upper left")
    axes[2].plot(ts, [p["online"] if p["online"] is not None else math.nan for p in pts], color="tab:green",
                 label="connected")
    axes[2].plot(ts, [p.get("ready") if p.get("ready") is not None else math.nan for p in pts], color="tab:purple",
                 label="resumed (subscribed and synced)")
    axes[2].set_ylabel("devices")
    axes[2].legend(loc="lower right")
    axes[2].set_xlabel("seconds since start")
    for name, t in report["phases"]:
        for ax in axes:
            ax.axvline(t, color="grey", linewidth=0.8, linestyle="--")
        axes[0].text(t, axes[0].get_ylim()[1] * 0.95, f" {name}", fontsize=8, color="grey", va="top")
    axes[0].set_title(f"{title} — over time")
    fig.tight_layout()
    path = out / "timeseries.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written
