"""Free loopback ports for the servers the tests, the simulator and the benchmarks start, tying those
servers to us, and the open-files limit."""

from __future__ import annotations

import contextlib
import random
import resource
import signal
import socket
import sys
from pathlib import Path
from typing import Any

_DEFAULT_EPHEMERAL = (32768, 60999)
#: Ports this process has handed out: never handed out twice (a system's MQTT and WebSocket ports
#: are chosen one after the other, before either server binds).
_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        low, _high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low)
    except (OSError, ValueError):
        return _DEFAULT_EPHEMERAL[0]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, chosen *below* the kernel's ephemeral range.

    A port handed out by ``bind(0)`` comes from the ephemeral range, which is also where every
    outgoing connection takes its local port: between choosing such a port and a server binding it,
    a client socket can take it. Ports below the range are only ever taken by listeners.
    """
    high = _ephemeral_start()
    low = max(1024, high - 12_000)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(low, high)
        if port in _handed_out:
            continue  # free now, but promised to a server that may not have bound it yet
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _handed_out.add(port)
            return port
    with socket.socket() as s:  # everything below the range is busy: take what the kernel gives
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prctl() -> Any:
    """libc's ``prctl``, resolved here in the parent: loading a library in a child forked from a
    threaded process can deadlock on the loader's lock."""
    if sys.platform != "linux":
        return None
    import ctypes

    return ctypes.CDLL("libc.so.6", use_errno=True).prctl


_PRCTL = _prctl()
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """``preexec_fn`` for the processes we start: on Linux they get SIGTERM if we die without
    stopping them (killed, out of memory), instead of running on."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def raise_fd_limit() -> int:
    """Lift this process's soft open-files limit to the hard one (children inherit it): every
    simulated device, and every benchmark connection, holds a socket. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
