"""Shared fixtures: free ports, real stores in temporary directories, and a whole running system.

Nothing here uses a fixed port: every server starts on a port the OS just handed out.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from harness import postgres
from mobile_sim.ports import free_port as free_port
from tests.push_standins.apns import ApnsStandIn
from tests.push_standins.fcm import FcmStandIn

ROOT = Path(__file__).resolve().parent.parent




def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc): ``mqchat up`` starts each process in its own group."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def wait_for_port(port: int, proc: subprocess.Popen[bytes], name: str, within: float = 10.0) -> None:
    """Wait until ``proc`` accepts connections on ``port``."""
    deadline = time.monotonic() + within
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"{name} did not start")
        time.sleep(0.05)


@dataclass
class System:
    """A running ``mqchat up`` in its own process group."""

    data_dir: Path
    mqtt_port: int
    ws_port: int
    http_port: int
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)
    broker: str | None = None
    """``host:port`` of an external broker (``mqchat up --broker``); None: the embedded one."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment for ``mqchat up`` (``MQCHAT_*`` settings included), merged over the filtered one."""

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60.0) -> None:
        names = ("bridge", "api", "workers") if self.broker else ("broker", "bridge", "api", "workers")
        for name in names:
            (self.data_dir / "run" / f"{name}.ready").unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | self.env
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mqchat.cli", "up", "--data-dir", str(self.data_dir),
                 "--mqtt-port", str(self.mqtt_port), "--ws-port", str(self.ws_port),
                 "--http-port", str(self.http_port), *(["--broker", self.broker] if self.broker else [])],
                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all((self.data_dir / "run" / f"{n}.ready").exists() for n in names):
                try:
                    if httpx.get(f"{self.api}/healthz", timeout=1).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"mqchat up did not start:\n{self.log.read_text()[-4000:]}")

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM ``mqchat up`` and wait; whatever is left is then killed."""
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


@pytest.fixture
def system_factory(tmp_path: Path) -> Iterator[type[System] | object]:
    made: list[System] = []

    def make() -> System:
        s = System(tmp_path / "data", free_port(), free_port(), free_port(), log=tmp_path / "up.log")
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill()


@pytest.fixture
def system(system_factory) -> System:  # type: ignore[no-untyped-def]
    s: System = system_factory()
    s.start()
    return s


class Mosquitto:
    """A real Mosquitto on a free loopback port, anonymous (no ACL)."""

    def __init__(self, binary: str, conf_dir: Path) -> None:
        self.binary = binary
        self.port = free_port()
        self.conf = conf_dir / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                             "set_tcp_nodelay true\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc, "mosquitto")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    import shutil

    binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if binary is None:
        pytest.skip("mosquitto is not installed (scripts/test installs it with apt-get)")
    broker = Mosquitto(binary, tmp_path)
    broker.start()
    yield broker
    broker.kill()


class RedisServer:
    """A private redis-server on a free loopback port, no persistence."""

    def __init__(self, workdir: Path) -> None:
        import shutil

        binary = shutil.which("redis-server") or (
            "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
        if binary is None:
            pytest.skip("redis-server is not installed (scripts/test installs it with apt-get)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc, "redis-server")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def fcm_standin(tmp_path: Path) -> Iterator[FcmStandIn]:
    """A local FCM HTTP v1 endpoint (and its OAuth token endpoint) on a free port."""
    standin = FcmStandIn(tmp_path).start()
    yield standin
    standin.stop()


@pytest.fixture
def apns_standin(tmp_path: Path) -> Iterator[ApnsStandIn]:
    """A local APNs HTTP/2 endpoint (TLS, self-signed) on a free port."""
    standin = ApnsStandIn(tmp_path).start()
    yield standin
    standin.stop()


# ------------------------------------------------------------------------------------ PostgreSQL


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[postgres.PostgresServer]:
    """One private PostgreSQL cluster per test session (per xdist worker), on a free port.

    Skipped where the server is not installed, except in CI, where a missing server is a failure:
    the production directory and search backends must never go untested silently.
    """
    if not postgres.available():
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; scripts/test installs Debian's postgresql package")
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    with postgres.running() as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres_server: postgres.PostgresServer) -> str:
    """The DSN of a new, empty database on the session's server, for this test alone."""
    import psycopg

    name = f"t_{os.getpid()}_{next(_databases)}"
    with psycopg.connect(postgres_server.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres_server.dsn.rsplit("/", 1)[0] + "/" + name


_databases = itertools.count()
