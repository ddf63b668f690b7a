"""Private Redis servers on free loopback ports, no persistence: one standalone server
(:class:`RedisServer`) or a three-node Redis Cluster (:class:`RedisClusterServers`).

Both expose ``url``, the value of ``redis.url`` that points mqchat at them: ``redis://...`` for the
server, ``redis+cluster://host:port,host:port,...`` for the cluster.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Self

from harness.ports import free_port
from harness.processes import NotInstalled, wait_port


def redis_binary() -> str | None:
    """The ``redis-server`` executable, or None if it is not installed."""
    return shutil.which("redis-server") or next((p for p in ("/usr/bin/redis-server",) if Path(p).exists()), None)


def redis_cli_binary() -> str | None:
    """The ``redis-cli`` executable, or None if it is not installed."""
    return shutil.which("redis-cli") or next((p for p in ("/usr/bin/redis-cli",) if Path(p).exists()), None)


def _server_cmd(binary: str, port: int, workdir: Path) -> list[str]:
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(workdir)]


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
        self.proc = subprocess.Popen(_server_cmd(binary, self.port, workdir),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, "redis-server", timeout=10)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisClusterServers:
    """A Redis Cluster of ``nodes`` primaries (no replicas), started and formed by the constructor.

    Each node is ``redis-server --cluster-enabled yes`` on a free port, with its cluster bus on another
    free port (``--cluster-port``) and its ``nodes.conf`` in its own directory under ``workdir``; the
    16384 slots are split between them by ``redis-cli --cluster create``. The constructor returns once
    every node reports ``cluster_state:ok``. :meth:`stop` it (or use it as a context manager).

    Raises:
        NotInstalled: ``redis-server`` or ``redis-cli`` is not installed.
        RuntimeError: a node did not start, or the cluster did not become ready within ``timeout`` s.
    """

    def __init__(self, workdir: Path, nodes: int = 3, *, timeout: float = 30.0) -> None:
        binary, cli = redis_binary(), redis_cli_binary()
        if binary is None or cli is None:
            raise NotInstalled("redis-server / redis-cli are not installed (scripts/test installs them with apt-get)")
        self._cli = cli
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        try:
            for i in range(nodes):
                port, bus = free_port(), free_port()
                node_dir = workdir / f"redis-cluster-{i}"
                node_dir.mkdir(parents=True, exist_ok=True)
                proc = subprocess.Popen(
                    [*_server_cmd(binary, port, node_dir), "--cluster-enabled", "yes", "--cluster-port", str(bus),
                     "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self.ports.append(port)
                self.procs.append(proc)
                wait_port(port, proc, f"redis-server (cluster node {i})", timeout=10)
            subprocess.run([cli, "--cluster", "create", *self.addresses, "--cluster-replicas", "0", "--cluster-yes"],
                           check=True, capture_output=True, timeout=timeout)
            self._wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        self.url = "redis+cluster://" + ",".join(self.addresses)

    @property
    def addresses(self) -> list[str]:
        """``127.0.0.1:port`` of every node."""
        return [f"127.0.0.1:{p}" for p in self.ports]

    def cli(self, port: int, *args: str) -> str:
        """``redis-cli -p port args...`` on one node; its output."""
        done = subprocess.run([self._cli, "-h", "127.0.0.1", "-p", str(port), *args], check=True,
                              capture_output=True, text=True, timeout=10)
        return done.stdout

    def _wait_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            infos = [self.cli(p, "cluster", "info") for p in self.ports]
            if all("cluster_state:ok" in info for info in infos):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis cluster not ready within {timeout:.0f}s: {infos}")
            time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
