"""Starting a server process tied to us, and waiting for it to listen."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.ports import die_with_parent


class NotInstalled(RuntimeError):
    """A program the harness needs (``mosquitto``, ``redis-server``) is not on this machine."""


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    """Wait until ``proc`` listens on ``port`` (on 127.0.0.1).

    Raises:
        RuntimeError: ``proc`` exited first, or the port did not open within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what}: port {port} did not open within {timeout:.0f}s")


def spawn(cmd: list[str], *, log: Path, **kw: Any) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own process group, its output appended to ``log``, SIGTERMed if we die."""
    with log.open("ab") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent, **kw)


def stop_group(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM ``proc``'s process group, then SIGKILL it if it has not exited after ``timeout`` s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def process(cmd: list[str], *, log: Path, **kw: Any) -> Iterator[subprocess.Popen[bytes]]:
    """:func:`spawn` for the block; :func:`stop_group` after it."""
    proc = spawn(cmd, log=log, **kw)
    try:
        yield proc
    finally:
        stop_group(proc)


def tail(path: Path, n: int = 4000) -> str:
    """The last ``n`` characters of a log, or ``""`` if it cannot be read."""
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-n:]
    return ""
