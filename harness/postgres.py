"""A private PostgreSQL server on a free loopback port, for tests and benchmarks.

``initdb`` a fresh cluster in a temporary directory, start it with ``pg_ctl`` on a port nobody else
uses, and hand out its DSN. Debian's ``postgresql`` package puts the server binaries under
``/usr/lib/postgresql/<major>/bin`` (not on ``PATH``), so both places are searched. PostgreSQL
refuses to run as root: when we are root, the cluster is owned by and run as the ``postgres``
system user that the package creates.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness.ports import free_port

_SEARCH = ("/usr/lib/postgresql",)


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (install Debian's ``postgresql`` package)."""


def find_bin(name: str) -> str:
    """The path of PostgreSQL's ``name`` binary (``initdb``, ``pg_ctl``, ``postgres``).

    Raises:
        PostgresUnavailable: when it is neither on ``PATH`` nor in a Debian versioned directory.
    """
    found = shutil.which(name)
    if found:
        return found
    for base in _SEARCH:
        majors = sorted(Path(base).glob("*/bin"), key=lambda p: p.parent.name, reverse=True)
        for bindir in majors:
            if (bindir / name).exists():
                return str(bindir / name)
    raise PostgresUnavailable(f"PostgreSQL's {name} was not found (apt-get install postgresql)")


def available() -> bool:
    """Whether a PostgreSQL server can be started here."""
    try:
        for name in ("initdb", "pg_ctl", "postgres"):
            find_bin(name)
    except PostgresUnavailable:
        return False
    return True


@dataclass
class PostgresServer:
    """One private cluster; :meth:`start` returns its DSN, :meth:`stop` removes it all.

    Tuned for tests: no fsync (a crash of the test machine loses nothing anyone needs), small
    shared buffers, connections only over loopback TCP and a private socket directory.
    """

    port: int = field(default_factory=free_port)
    database: str = "mqchat"
    user: str = "mqchat"
    durable: bool = False
    """``fsync`` on (benchmarks that measure durable writes); tests keep it off."""
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="mqchat-pg-")))
    _run_as: list[str] = field(default_factory=list)

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    def _cmd(self, *args: str) -> list[str]:
        return [*self._run_as, *args]

    def start(self, timeout: float = 60.0) -> str:
        """Create the cluster and start it; returns the DSN (trust authentication on loopback)."""
        initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if os.geteuid() == 0:
            # PostgreSQL will not run as root: hand the directory to the package's system user.
            owner = pwd.getpwnam("postgres")
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
            self._run_as = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            self._cmd(initdb, "-D", str(self.datadir), "-U", self.user, "-A", "trust", "-E", "UTF8",
                      "--locale=C.UTF-8", "--no-sync"),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        sync = "on" if self.durable else "off"
        options = (f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
                   f" -c fsync={sync} -c synchronous_commit={sync} -c full_page_writes={sync}"
                   " -c shared_buffers=64MB -c max_connections=200")
        subprocess.run(
            self._cmd(pg_ctl, "-D", str(self.datadir), "-l", str(self.root / "server.log"), "-o", options,
                      "-w", "-t", str(int(timeout)), "start"),
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self._createdb(timeout)
        return self.dsn

    def _createdb(self, timeout: float) -> None:
        createdb = find_bin("createdb")
        deadline = time.monotonic() + timeout
        while True:
            done = subprocess.run(
                self._cmd(createdb, "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
            )
            if done.returncode == 0 or b"already exists" in done.stderr:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"createdb failed: {done.stderr.decode(errors='replace')}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.root / "server.log").read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its files; safe to call twice."""
        if self.datadir.exists():
            with contextlib.suppress(subprocess.SubprocessError, PostgresUnavailable):
                subprocess.run(self._cmd(find_bin("pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "stop"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def running(*, durable: bool = False) -> Iterator[PostgresServer]:
    """A started :class:`PostgresServer`, stopped and removed on exit."""
    server = PostgresServer(durable=durable)
    try:
        server.start()
        yield server
    finally:
        server.stop()
