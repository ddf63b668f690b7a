"""The one launcher of the whole system: ``mqchat up`` on free loopback ports, as a user runs it.

:class:`System` is one ``mqchat up`` in a given data directory (start, stop, kill, start again);
:func:`launch` is the usual way in: a fresh temporary directory, optionally a Mosquitto started here
as the broker (``mqchat up --broker``), stopped and removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from harness.mosquitto import Mosquitto
from harness.ports import free_port
from harness.processes import spawn, tail

#: The repository: ``mqchat up`` runs from here, so its children import this checkout.
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class System:
    """A running ``mqchat up`` in its own process group.

    Attributes:
        data_dir: its ``--data-dir``.
        mqtt_port, ws_port, http_port: its listeners (``mqtt_port`` is the external broker's with ``broker``).
        log: its output, appended.
        broker: ``host:port`` of an external broker (``mqchat up --broker``); None: the embedded one.
        env: extra environment (``MQCHAT_*`` settings included), merged over ours without its ``MQCHAT_*``.
        mosquitto: the Mosquitto :func:`launch` started as its broker, if any.
        bridges, workers: how many of each ``mqchat up`` runs (``--bridges``, ``--workers``).
        redis_url: a Redis (or Redis Cluster) for ``redis.url`` instead of ``mqchat up``'s private one;
            an ``MQCHAT_REDIS__URL`` in ``env`` wins.
    """

    data_dir: Path
    mqtt_port: int
    ws_port: int
    http_port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)
    broker: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    mosquitto: Mosquitto | None = None
    bridges: int = 1
    workers: int = 1
    redis_url: str | None = None

    @classmethod
    def on_free_ports(cls, workdir: Path, *, broker_port: int | None = None,
                      env: dict[str, str] | None = None) -> Self:
        """A system (not started) with its data and log in ``workdir``, on free ports.

        Args:
            broker_port: a broker on 127.0.0.1 to use instead of the embedded one.
        """
        mqtt = free_port() if broker_port is None else broker_port
        return cls(workdir / "data", mqtt, free_port(), free_port(), log=workdir / "up.log",
                   broker=None if broker_port is None else f"127.0.0.1:{broker_port}", env=dict(env or {}))

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def processes(self) -> tuple[str, ...]:
        """The processes ``mqchat up`` runs (each writes ``run/<name>.ready`` once it serves)."""
        return (*(() if self.broker else ("broker",)),
                *("bridge" if i == 0 else f"bridge-{i}" for i in range(self.bridges)), "api",
                *("workers" if i == 0 else f"workers-{i}" for i in range(self.workers)))

    def start(self, timeout: float = 60.0) -> Self:
        """Start ``mqchat up`` and wait until every process is ready and the API answers ``/healthz``.

        Raises:
            RuntimeError: it exited, or was not ready within ``timeout`` seconds (with its log's tail).
        """
        for name in self.processes:
            (self.data_dir / "run" / f"{name}.ready").unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")}
        if self.redis_url is not None:
            env["MQCHAT_REDIS__URL"] = self.redis_url
        env |= self.env
        cmd = [sys.executable, "-m", "mqchat.cli", "up", "--data-dir", str(self.data_dir),
               "--mqtt-port", str(self.mqtt_port), "--ws-port", str(self.ws_port),
               "--http-port", str(self.http_port), *(["--broker", self.broker] if self.broker else []),
               *(["--bridges", str(self.bridges)] if self.bridges != 1 else []),
               *(["--workers", str(self.workers)] if self.workers != 1 else [])]
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(cmd, log=self.log, env=env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all((self.data_dir / "run" / f"{n}.ready").exists() for n in self.processes) and self._healthy():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"mqchat up exited with {self.proc.returncode}:\n{tail(self.log)}")
            time.sleep(0.1)
        raise RuntimeError(f"mqchat up was not ready within {timeout:.0f}s:\n{tail(self.log)}")

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api}/healthz", timeout=2) as r:
                return int(r.status) == 200
        except (OSError, urllib.error.URLError):
            return False

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM ``mqchat up`` (it stops its processes in order) and wait; whatever is left is then
        killed. Returns its exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group: supervisor, broker, bridge and API at once."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@contextlib.contextmanager
def launch(*, mosquitto: bool = False, env: dict[str, str] | None = None, workdir: Path | None = None,
           timeout: float = 90.0) -> Iterator[System]:
    """Run the whole system on free loopback ports, for the block.

    Args:
        mosquitto: carry MQTT over a Mosquitto started here (tuned for load) with ``mqchat up --broker``.
        env: extra ``MQCHAT_*`` settings (``MQCHAT_LOG_LEVEL`` defaults to WARNING).
        workdir: use this directory (kept afterwards, logs included) instead of a temporary one.
        timeout: longest wait for the system to be ready.

    Raises:
        harness.processes.NotInstalled: ``mosquitto`` is asked for and not installed.
        RuntimeError: the system did not start.
    """
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mqchat-")))
        else:
            workdir.mkdir(parents=True, exist_ok=True)
        broker = stack.enter_context(Mosquitto(workdir, tuned=True)) if mosquitto else None
        system = System.on_free_ports(workdir, broker_port=broker.port if broker else None,
                                      env={"MQCHAT_LOG_LEVEL": "WARNING"} | (env or {}))
        system.mosquitto = broker
        if broker is not None:
            system.ws_port = broker.ws_port  # clients' MQTT over WebSocket is the broker's
        stack.callback(system.stop)
        system.start(timeout)
        yield system
