"""Shared fixtures: free ports, real stores in temporary directories, and a whole running system.

Nothing here uses a fixed port: every server starts on a port the OS just handed out. The servers
themselves come from :mod:`harness` (shared with the simulator and the benchmarks).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import postgres
from harness.mosquitto import Mosquitto as Mosquitto
from harness.ports import free_port as free_port
from harness.processes import NotInstalled
from harness.push_standins.apns import ApnsStandIn
from harness.push_standins.fcm import FcmStandIn
from harness.redis import RedisClusterServers as RedisClusterServers
from harness.redis import RedisServer as RedisServer
from harness.system import ROOT as ROOT
from harness.system import System as System


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


@pytest.fixture
def system_factory(tmp_path: Path) -> Iterator[type[System] | object]:
    made: list[System] = []

    def make() -> System:
        s = System.on_free_ports(tmp_path)
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


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A plain Mosquitto (default limits) on a free port."""
    try:
        broker = Mosquitto(tmp_path).start()
    except NotInstalled as exc:
        pytest.skip(str(exc))
    yield broker
    broker.kill()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    try:
        server = RedisServer(tmp_path)
    except NotInstalled as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A three-node Redis Cluster, one per test session (per xdist worker): forming one takes seconds.
    Tests that use it start from an empty cluster through :func:`redis_url`."""
    try:
        cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster"))
    except NotInstalled as exc:
        pytest.skip(str(exc))
    yield cluster
    cluster.stop()


@pytest.fixture(params=["single", "cluster"])
def redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """``redis.url`` of an empty Redis: a private redis-server (``single``) or the session's
    three-node Redis Cluster (``cluster``: every key and every loaded script flushed first, so each
    test also sees the scripts missing at first, as after a restart)."""
    if request.param == "single":
        try:
            server = RedisServer(tmp_path)
        except NotInstalled as exc:
            pytest.skip(str(exc))
        yield server.url
        server.stop()
        return
    cluster: RedisClusterServers = request.getfixturevalue("redis_cluster")
    for port in cluster.ports:
        cluster.cli(port, "flushall")
        cluster.cli(port, "script", "flush")
    yield cluster.url


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
