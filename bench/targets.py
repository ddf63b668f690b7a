"""The brokers under test: how each is started on a free loopback port, stopped, and observed.

Launch settings, and why they differ from each broker's defaults (nothing else is changed):

- every broker logs warnings and errors only (the amqtt CLI logs at INFO, Mosquitto logs every
  connection): 10,000 connection lines must not be what the benchmark measures;
- Mosquitto: ``set_tcp_nodelay true``. Its default leaves Nagle's algorithm on for client sockets,
  so a delivery can wait for the subscriber's delayed ACK (~40 ms on Linux): a p99 of 20-40 ms at
  500 msg/s in an early run of this benchmark. Both Python brokers get TCP_NODELAY from asyncio;
- ``mqchat``: ``broker.publish_rate_per_s = 0`` (no publish rate limit). ``--no-auth`` already
  has none; the setting stays explicit so a change there cannot throttle the benchmark publisher;
- every broker inherits ``RLIMIT_NOFILE`` raised to its hard limit (:func:`harness.ports.raise_fd_limit`), as a
  production service unit would set it; the broker's own limit is recorded in the results.

Queue and in-flight limits are left at the defaults (Mosquitto: 20 in flight, 1,000 queued per
client; mqchat: 100 / 1,000; amqtt: unbounded): the load generators never let the publisher run
more than ``backlog`` (500) messages ahead of the slowest subscriber, so no queue limit is reached.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from harness.mosquitto import mosquitto_binary
from harness.ports import free_port

TARGETS = ("mosquitto", "amqtt", "mqchat")
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
ROOT = Path(__file__).resolve().parent.parent


def available(target: str) -> bool:
    return target != "mosquitto" or mosquitto_binary() is not None


@dataclass
class Running:
    """A started broker."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    pid: int
    """The process that holds the listening socket (measured for RSS and CPU)."""

    def rss_kib(self) -> int:
        return proc_status_kib(self.pid, "VmRSS")

    def cpu_s(self) -> float:
        return proc_cpu_s(self.pid)

    def open_fds(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return -1

    def nofile_limit(self) -> int:
        """The broker's soft open-files limit, from /proc/<pid>/limits (-1: unknown)."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{self.pid}/limits").read_text().splitlines():
                if line.startswith("Max open files"):
                    return int(line.split()[3])
        return -1

    def alive(self) -> bool:
        return self.proc.poll() is None


def proc_status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (VmRSS, VmHWM); -1 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return -1


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (not its children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def host_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs together, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    return inodes


def socket_holder(root_pid: int, port: int) -> int:
    """The process, ``root_pid`` or one of its descendants, that holds the socket listening on ``port``."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    for pid in _descendants(root_pid):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                        return pid
    return root_pid


def _wait_port(port: int, proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{name} did not start on port {port} (exit {proc.poll()}):\n{tail}")
        time.sleep(0.05)


def _command(target: str, port: int, workdir: Path) -> tuple[list[str], dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")}
    if target == "mosquitto":
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed")
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
                        "log_type error\nlog_type warning\n")
        return [binary, "-c", str(conf)], env
    if target == "amqtt":
        return [sys.executable, "-m", "bench.amqtt_broker", "--port", str(port)], env
    if target == "mqchat":
        env |= {"MQCHAT_DATA_DIR": str(workdir), "MQCHAT_LOG_LEVEL": "WARNING",
                "MQCHAT_BROKER__PUBLISH_RATE_PER_S": "0"}
        return [sys.executable, "-m", "mqchat.cli", "broker", "--port", str(port), "--no-auth"], env
    raise ValueError(f"unknown target {target!r}")


@contextlib.contextmanager
def running(target: str, workdir: Path) -> Iterator[Running]:
    """Start ``target`` on a free loopback port in ``workdir``; stop it (SIGTERM, then SIGKILL) on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd, env = _command(target, port, workdir)
    log = workdir / f"{target}.log"
    with log.open("ab") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_port(port, proc, target, log)
        yield Running(target, port, proc, socket_holder(proc.pid, port))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
