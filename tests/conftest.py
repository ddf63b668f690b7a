"""Shared fixtures: free ports, real stores in temporary directories, and a whole running system.

Nothing here uses a fixed port: every server starts on a port the OS just handed out. The servers
themselves come from :mod:`harness` (shared with the simulator and the benchmarks).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
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


# ------------------------------------------------------------------------------------ topologies
#
# A module marked ``pytest.mark.topologies`` runs each of its tests that starts the system (through
# ``system`` or ``system_factory``) twice, with ids ``[embedded]`` and ``[production]``:
#
# - ``embedded``: ``mqchat up`` as a developer runs it (embedded broker, one bridge, one workers
#   instance, a private redis-server);
# - ``production``: ``mqchat up --broker ... --bridges 2 --workers 2`` on a Mosquitto (tuned,
#   anonymous) and the session's three-node Redis Cluster, emptied for each test.
#
# ``redis_server`` follows the test's topology (the cluster under ``production``), so tests that
# read Redis or hand its URL to the system stay unchanged. A test whose premise holds only on the
# embedded topology carries ``pytest.mark.embedded_only("why")``: its ``[production]`` variant is
# skipped with that reason. Each variant is also marked ``embedded`` or ``production`` (``-m
# production`` selects the production runs); ``--topology`` (or ``MQCHAT_TEST_TOPOLOGY``) keeps one.

TOPOLOGIES = ("embedded", "production")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--topology", choices=(*TOPOLOGIES, "both"),
                     default=os.environ.get("MQCHAT_TEST_TOPOLOGY", "both"),
                     help="topologies the modules marked `topologies` run on (default: both; env "
                          "MQCHAT_TEST_TOPOLOGY)")


def pytest_configure(config: pytest.Config) -> None:
    for line in ("topologies: run the module's system tests on the embedded and the production topology",
                 "embedded_only(reason): the test's premise holds only on the embedded topology",
                 "embedded: the embedded-topology variant of a `topologies` test",
                 "production: the production-topology variant of a `topologies` test (Mosquitto, 2 bridges, "
                 "2 workers, Redis Cluster)"):
        config.addinivalue_line("markers", line)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "topology" not in metafunc.fixturenames or metafunc.definition.get_closest_marker("topologies") is None:
        return
    wanted = metafunc.config.getoption("topology")
    only = metafunc.definition.get_closest_marker("embedded_only")
    params = []
    for name in TOPOLOGIES:
        if wanted not in ("both", name):
            continue
        marks: list[pytest.MarkDecorator] = [getattr(pytest.mark, name)]
        if name == "production" and only is not None:
            marks.append(pytest.mark.skip(reason=f"embedded topology only: {only.args[0]}"))
        params.append(pytest.param(name, marks=marks, id=name))
    metafunc.parametrize("topology", params, indirect=True)


@pytest.fixture
def topology(request: pytest.FixtureRequest) -> str:
    """``embedded`` or ``production``: this test's topology (``embedded`` outside ``topologies`` modules)."""
    return str(getattr(request, "param", "embedded"))


@pytest.fixture
def production_redis(redis_cluster: RedisClusterServers) -> RedisClusterServers:
    """The session's Redis Cluster, emptied (keys and loaded scripts) for this test."""
    for port in redis_cluster.ports:
        redis_cluster.cli(port, "flushall")
        redis_cluster.cli(port, "script", "flush")
    return redis_cluster


def kill_all(system: System) -> None:
    """SIGKILL ``mqchat up`` and every child it started (each runs in its own process group, and
    would otherwise drain on the SIGTERM its parent's death sends, still writing to shared servers)."""
    if system.proc is not None and system.proc.poll() is None:
        for pid in children_of(system.proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    system.kill()


@pytest.fixture
def system_factory(tmp_path: Path, topology: str,
                   request: pytest.FixtureRequest) -> Iterator[type[System] | object]:
    made: list[System] = []

    def make() -> System:
        if topology == "production":
            cluster: RedisClusterServers = request.getfixturevalue("production_redis")
            try:
                (tmp_path / "mosquitto").mkdir(exist_ok=True)
                broker = Mosquitto(tmp_path / "mosquitto", tuned=True).start()
            except NotInstalled as exc:
                pytest.skip(str(exc))
            s = System.on_free_ports(tmp_path, broker_port=broker.port)
            s.mosquitto, s.ws_port, s.redis_url = broker, broker.ws_port, cluster.url
            s.bridges = s.workers = 2
        else:
            s = System.on_free_ports(tmp_path)
        made.append(s)
        return s

    yield make
    for s in made:
        if s.mosquitto is not None:
            kill_all(s)
            s.mosquitto.kill()
        else:
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
def redis_server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A private redis-server; under the ``production`` topology, the session's Redis Cluster instead
    (emptied for the test): tests use its ``url``."""
    if request.getfixturevalue("topology") == "production":
        yield request.getfixturevalue("production_redis")
        return
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
