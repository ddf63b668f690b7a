"""A private redis-server on a free loopback port, no persistence."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Self

from harness.ports import free_port
from harness.processes import NotInstalled, wait_port


def redis_binary() -> str | None:
    """The ``redis-server`` executable, or None if it is not installed."""
    return shutil.which("redis-server") or next((p for p in ("/usr/bin/redis-server",) if Path(p).exists()), None)


class RedisServer:
    """A redis-server, started by the constructor; :meth:`stop` it (or use it as a context manager).

    Raises:
        NotInstalled: there is no ``redis-server`` on this machine.
    """

    def __init__(self, workdir: Path) -> None:
        binary = redis_binary()
        if binary is None:
            raise NotInstalled("redis-server is not installed (scripts/test installs it with apt-get)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, self.proc, "redis-server", timeout=10)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
