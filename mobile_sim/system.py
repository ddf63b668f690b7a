"""The system under test: one the simulator starts itself, or one already running.

:func:`start` runs ``mqchat up`` on free loopback ports with a temporary data directory, exactly as
a user would (optionally against a Mosquitto it also starts, with ``mqchat up --broker``, and with
its push workers pointed at the FCM / APNs stand-ins). Because the simulator then chose the JWT
secret itself (``MQCHAT_AUTH__SECRET``, a documented setting), it can mint device tokens instead
of logging every device in: see :mod:`mobile_sim.provision`.

:class:`ProcessSampler` reads ``/proc`` for the CPU and memory of ``mqchat up``'s children,
telling them apart by their command lines (``python -m broker`` / ``bridge`` / ``api`` /
``workers``, ``redis-server``, ``mosquitto``). Nothing here imports the server packages.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from mobile_sim.ports import die_with_parent, free_port

Transport = Literal["embedded", "mosquitto"]
ROOT = Path(__file__).resolve().parent.parent
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
    push: Any = None


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None)


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    """Wait until ``proc`` listens on ``port`` (on 127.0.0.1); fail at once if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what}: port {port} did not open within {timeout:.0f}s")


@contextlib.contextmanager
def process(cmd: list[str], *, log: Path, **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in its own process group (output appended to ``log``), tied to this process;
    on exit SIGTERM the group, then SIGKILL after 30 s."""
    with log.open("ab") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent, **kw)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def mosquitto(workdir: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A bare Mosquitto on a free loopback port, anonymous, sized for many clients and deep queues."""
    binary = mosquitto_binary()
    if binary is None:
        raise RuntimeError("mosquitto is not installed (apt-get install mosquitto)")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1000\n"
                    "max_queued_messages 100000\npersistence false\nmax_keepalive 3600\nset_tcp_nodelay true\n")
    with process([binary, "-c", str(conf)], log=workdir / "mosquitto.log") as proc:
        wait_port(port, proc, "mosquitto")
        yield port, proc


@contextlib.contextmanager
def push_standins(workdir: Path) -> Iterator[Any]:
    """The FCM and APNs stand-ins from this repository's tests, in this process (so the simulator
    sees every push they receive). Needs a source checkout."""
    try:
        from tests.push_standins.apns import ApnsStandIn
        from tests.push_standins.fcm import FcmStandIn
    except ImportError as exc:
        raise RuntimeError("the push scenario needs the FCM/APNs stand-ins from a source checkout "
                           "(tests/push_standins)") from exc
    (workdir / "standins").mkdir(exist_ok=True)
    fcm = FcmStandIn(workdir / "standins").start()
    apns = ApnsStandIn(workdir / "standins").start()
    try:
        yield PushStandins(fcm, apns)
    finally:
        apns.stop()
        fcm.stop()


@dataclass
class PushStandins:
    fcm: Any
    apns: Any

    def env(self) -> dict[str, str]:
        """``mqchat up`` settings that point its push workers at the stand-ins (see docs/push.md)."""
        f, a = self.fcm, self.apns
        return {
            "MQCHAT_PUSH__FCM_SERVICE_ACCOUNT_FILE": str(f.service_account), "MQCHAT_PUSH__FCM_ENDPOINT": f.endpoint,
            "MQCHAT_PUSH__APNS_KEY_FILE": str(a.key_file), "MQCHAT_PUSH__APNS_KEY_ID": a.key_id,
            "MQCHAT_PUSH__APNS_TEAM_ID": a.team_id, "MQCHAT_PUSH__APNS_TOPIC": "com.example.mobile-sim",
            "MQCHAT_PUSH__APNS_HOST": a.host, "MQCHAT_PUSH__APNS_CA_FILE": str(a.ca_file),
            "MQCHAT_PUSH__REQUEST_TIMEOUT_S": "5",
        }

    def received(self) -> list[tuple[str, str, dict[str, Any]]]:
        """``(platform, device token, payload)`` of every push answered with success so far."""
        out: list[tuple[str, str, dict[str, Any]]] = []
        out += [("fcm", r.token, r.payload) for r in self.fcm.recorder.delivered()]
        out += [("apns", r.token, r.payload) for r in self.apns.recorder.delivered()]
        return out


@contextlib.contextmanager
def start(*, transport: Transport = "embedded", push: bool = False, env: dict[str, str] | None = None,
          keep: Path | None = None) -> Iterator[Target]:
    """Run the whole system on free loopback ports with a fresh data directory.

    Args:
        transport: ``embedded`` (our broker, ``mqchat up``) or ``mosquitto`` (``mqchat up --broker``
            against a Mosquitto started here).
        push: also start the FCM / APNs stand-ins and point the push workers at them.
        env: extra ``MQCHAT_*`` settings.
        keep: use this directory (kept afterwards, logs included) instead of a temporary one.
    """
    with contextlib.ExitStack() as stack:
        if keep is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mobile-sim-")))
        else:
            workdir = keep
            workdir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        http, mqtt, ws = free_port(), free_port(), free_port()
        extra: dict[str, int] = {}
        broker: list[str] = []
        if transport == "mosquitto":
            # `--mqtt-port` would override the port of `--broker`: both name the broker devices use.
            mqtt, mproc = stack.enter_context(mosquitto(workdir))
            extra["mosquitto"] = mproc.pid
            broker = ["--broker", f"127.0.0.1:{mqtt}"]
        cmd = [sys.executable, "-m", "mqchat.cli", "up", "--data-dir", str(workdir / "data"),
               "--mqtt-port", str(mqtt), "--ws-port", str(ws), "--http-port", str(http), *broker]
        standins = stack.enter_context(push_standins(workdir)) if push else None
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {
            "MQCHAT_LOG_LEVEL": "WARNING", "MQCHAT_AUTH__SECRET": secret}
        if standins is not None:
            child_env |= standins.env()
        child_env |= env or {}
        up = stack.enter_context(process(cmd, log=workdir / "up.log", env=child_env, cwd=ROOT))
        names = ("bridge", "api", "workers") if transport == "mosquitto" else ("broker", "bridge", "api", "workers")
        deadline = time.monotonic() + 90
        while True:
            if up.poll() is not None:
                raise RuntimeError(f"mqchat up exited with {up.returncode}:\n{_tail(workdir / 'up.log')}")
            if all((workdir / "data" / "run" / f"{n}.ready").exists() for n in names):
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"http://127.0.0.1:{http}/healthz", timeout=2).status_code == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError(f"mqchat up did not become ready:\n{_tail(workdir / 'up.log')}")
            time.sleep(0.1)
        yield Target(api=f"http://127.0.0.1:{http}", mqtt_host="127.0.0.1", mqtt_port=mqtt, jwt_secret=secret,
                     transport=transport, root_pid=up.pid, extra_pids=extra, data_dir=workdir / "data",
                     push=standins)


def _tail(path: Path, n: int = 4000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-n:]
    return ""


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
