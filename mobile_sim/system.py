"""The system under test: one the simulator starts itself, or one already running.

:func:`start` runs ``mqchat up`` on free loopback ports with a temporary data directory, exactly as
a user would, through :func:`harness.system.launch` (optionally against a Mosquitto it also starts,
with ``mqchat up --broker``, and with its push workers pointed at the FCM / APNs stand-ins of
:mod:`harness.push_standins`). Because the simulator then chose the JWT secret itself
(``MQCHAT_AUTH__SECRET``, a documented setting), it can mint device tokens instead of logging every
device in: see :mod:`mobile_sim.provision`.

:class:`ProcessSampler` reads ``/proc`` for the CPU and memory of ``mqchat up``'s children,
telling them apart by their command lines (``python -m broker`` / ``bridge`` / ``api`` /
``workers``, ``redis-server``, ``mosquitto``). Nothing here imports the server packages.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from harness.system import launch

if TYPE_CHECKING:
    from harness.push_standins.pair import PushStandins

Transport = Literal["embedded", "mosquitto"]
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class Target:
    """Where the system under test listens, and what the simulator knows about it.

    Attributes:
        api: base URL of the HTTP API.
        mqtt_host, mqtt_port: the MQTT broker devices connect to.
        jwt_secret: the HS256 secret, when the simulator knows it (it started the system, or was
            given ``--jwt-secret``): device tokens are then minted locally.
        transport: which broker carries MQTT.
        root_pid: ``mqchat up``'s pid (its children are sampled), when the simulator started it.
        extra_pids: other processes worth sampling (a Mosquitto the simulator started).
        data_dir: the system's data directory, when the simulator started it.
        push: the stand-ins' handle, when push is on.
    """

    api: str
    mqtt_host: str
    mqtt_port: int
    jwt_secret: str | None = None
    transport: Transport = "embedded"
    root_pid: int | None = None
    extra_pids: dict[str, int] = field(default_factory=dict)
    data_dir: Path | None = None
    push: PushStandins | None = None


@contextlib.contextmanager
def start(*, transport: Transport = "embedded", push: bool = False, env: dict[str, str] | None = None,
          keep: Path | None = None) -> Iterator[Target]:
    """Run the whole system on free loopback ports with a fresh data directory (:func:`harness.system.launch`).

    Args:
        transport: ``embedded`` (our broker, ``mqchat up``) or ``mosquitto`` (``mqchat up --broker``
            against a Mosquitto started here).
        push: also start the FCM / APNs stand-ins and point the push workers at them.
        env: extra ``MQCHAT_*`` settings.
        keep: use this directory (kept afterwards, logs included) instead of a temporary one.
    """
    with contextlib.ExitStack() as stack:
        workdir = keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mobile-sim-")))
        secret = secrets.token_urlsafe(48)
        # A load test from one loopback address: HTTP rate limits off, explicitly (docs/security.md).
        child_env = {"MQCHAT_AUTH__SECRET": secret, "MQCHAT_RATELIMIT__ENABLED": "false"}
        standins = None
        if push:
            # Imported here: the stand-ins bring TLS and HTTP/2 servers only the push scenario needs.
            from harness.push_standins.pair import push_standins

            standins = stack.enter_context(push_standins(workdir / "standins"))
            child_env |= standins.env()
        child_env |= env or {}
        system = stack.enter_context(launch(mosquitto=transport == "mosquitto", env=child_env, workdir=workdir))
        assert system.proc is not None
        extra = {"mosquitto": system.mosquitto.proc.pid} if system.mosquitto and system.mosquitto.proc else {}
        yield Target(api=system.api, mqtt_host="127.0.0.1", mqtt_port=system.mqtt_port, jwt_secret=secret,
                     transport=transport, root_pid=system.proc.pid, extra_pids=extra, data_dir=system.data_dir,
                     push=standins)


# -- /proc sampling ---------------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def role_of(cmdline: list[str]) -> str:
    """Which part of the system a process is, from its command line."""
    joined = " ".join(cmdline)
    if "redis-server" in joined:
        return "redis"
    if "mosquitto" in (Path(cmdline[0]).name if cmdline else ""):
        return "mosquitto"
    if "-m" in cmdline:
        module = cmdline[cmdline.index("-m") + 1] if cmdline.index("-m") + 1 < len(cmdline) else ""
        return module.split(".")[0] or "?"
    return Path(cmdline[0]).name if cmdline else "?"


def _cmdline(pid: int) -> list[str]:
    try:
        return [a for a in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0") if a]
    except OSError:
        return []


def _cpu_rss(pid: int) -> tuple[float, int] | None:
    """``(CPU seconds, user + system, resident bytes)`` of one process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # Fields after ")" start at 3 (state); utime is 14, stime 15, rss 24 (1-based, proc(5)).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK, int(fields[21]) * PAGE


@dataclass
class ProcessSampler:
    """CPU share and RSS of the system's processes (and of this simulator) over a run.

    Call :meth:`sample` periodically; :meth:`summary` gives, per role, the mean CPU (in % of one
    core) between the first and last sample and the peak RSS.
    """

    target: Target
    pids: dict[int, str] = field(default_factory=dict)
    first: dict[int, tuple[float, float]] = field(default_factory=dict)
    last: dict[int, tuple[float, float]] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    series: list[dict[str, float]] = field(default_factory=list)
    """One point per sample: ``t`` and the CPU % of each role since the previous sample."""

    def discover(self) -> None:
        pids: dict[int, str] = {os.getpid(): "simulator"}
        if self.target.root_pid is not None:
            for child in _children(self.target.root_pid):
                pids[child] = role_of(_cmdline(child))
        for name, pid in self.target.extra_pids.items():
            pids[pid] = name
        self.pids = pids

    def sample(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if not self.pids:
            self.discover()
        point: dict[str, float] = {"t": now}
        for pid, role in self.pids.items():
            got = _cpu_rss(pid)
            if got is None:
                continue
            cpu, rss = got
            prev = self.last.get(pid)
            if prev is not None and now > prev[0]:
                point[role] = point.get(role, 0.0) + 100 * (cpu - prev[1]) / (now - prev[0])
            self.first.setdefault(pid, (now, cpu))
            self.last[pid] = (now, cpu)
            self.peak_rss[role] = max(self.peak_rss.get(role, 0), rss)
        if len(point) > 1:
            self.series.append(point)

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for pid, role in self.pids.items():
            if pid not in self.first or pid not in self.last:
                continue
            (t0, c0), (t1, c1) = self.first[pid], self.last[pid]
            entry = out.setdefault(role, {"cpu_pct": 0.0, "cpu_s": 0.0, "rss_mb": 0.0})
            entry["cpu_s"] = round(entry["cpu_s"] + (c1 - c0), 2)
            if t1 > t0:
                entry["cpu_pct"] = round(entry["cpu_pct"] + 100 * (c1 - c0) / (t1 - t0), 1)
        for role, rss in self.peak_rss.items():
            if role in out:
                out[role]["rss_mb"] = round(rss / 2**20, 1)
        return out
