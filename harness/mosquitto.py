"""A real Mosquitto on a free loopback port, anonymous (no ACL), for tests, the simulator and the benchmarks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Self

from harness.ports import free_port
from harness.processes import NotInstalled, spawn, stop_group, wait_port

#: Sized for many clients and deep queues: what the simulator and the pipeline benchmark load it with.
TUNED = "max_inflight_messages 1000\nmax_queued_messages 100000\nmax_keepalive 3600\n"


def mosquitto_binary() -> str | None:
    """The ``mosquitto`` executable, or None if it is not installed."""
    return shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None)


class Mosquitto:
    """One Mosquitto broker; :meth:`start` it (or use it as a context manager), :meth:`kill` and
    :meth:`start` again to take it away and bring it back on the same ports: MQTT on ``port``, MQTT
    over WebSocket on ``ws_port`` (any path, ``/mqtt`` included).

    Args:
        workdir: where its configuration and log go.
        tuned: raise the in-flight, queue and keepalive limits (:data:`TUNED`) above the defaults.

    Raises:
        NotInstalled: there is no ``mosquitto`` on this machine.
    """

    def __init__(self, workdir: Path, *, tuned: bool = False) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise NotInstalled("mosquitto is not installed (scripts/test installs it with apt-get)")
        self.binary = binary
        self.port = free_port()
        self.ws_port = free_port()
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                             f"set_tcp_nodelay true\n{TUNED if tuned else ''}"
                             f"listener {self.ws_port} 127.0.0.1\nprotocol websockets\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.proc = spawn([self.binary, "-c", str(self.conf)], log=self.log)
        wait_port(self.port, self.proc, "mosquitto")
        return self

    def kill(self) -> None:
        """SIGKILL: the broker goes away at once, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s."""
        if self.proc is not None:
            stop_group(self.proc)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
