"""Keep ``mqchat up``'s children alive: restart a crashed child, restart a hung one, stop on a crash loop.

```
 every tick (0.1 s)                                     every probe interval (2 s)
   child exited? ──▶ backoff (0.5 s · 2^n, ≤ 10 s) ──▶ respawn ──▶ starting ──ready file──▶ running
        │                     │                                         ▲                   │
        │          more than loop_max restarts within                   └── probe_failures ─┘
        │          loop_window_s: crash loop, stop all                     failed /healthz in a row:
        └──── the others keep running meanwhile                            hung (e.g. SIGSTOP) → SIGKILL
```

The children are independent processes that already survive each other's absence: the bridge and
the workers reconnect to the broker and to Redis by themselves, devices reconnect and resume with
``sync``, and an unacked send is retried by its device with the same ``cmid``. So restarting one
child is enough to heal the system; nothing else is restarted with it.

The functions that define policy are pure (:func:`restart_delay`, :func:`crash_loop`), with the
time passed in; :class:`Supervisor` is the I/O around them and is driven by :meth:`Supervisor.tick`.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Gauge

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a child and when to give up."""

    base_s: float = 0.5
    """First restart delay; doubled for each further restart inside the window."""
    cap_s: float = 10.0
    """Longest restart delay."""
    loop_window_s: float = 60.0
    """The window in which restarts are counted."""
    loop_max: int = 5
    """More restarts than this inside the window is a crash loop: the system stops."""
    probe_interval_s: float = 2.0
    """How often a running child's health endpoint is asked."""
    probe_timeout_s: float = 3.0
    """How long one health probe may take."""
    probe_failures: int = 3
    """Failed probes in a row after which a running child is taken for hung and killed."""
    ready_timeout_s: float = 30.0
    """How long a (re)started child may take to announce readiness before it counts as crashed."""

    def __post_init__(self) -> None:
        if self.base_s <= 0 or self.cap_s < self.base_s:
            raise ValueError("restart delays: need 0 < base_s <= cap_s")
        if self.loop_max < 1 or self.loop_window_s <= 0:
            raise ValueError("crash loop: need loop_max >= 1 and loop_window_s > 0")
        if self.probe_failures < 1 or self.probe_interval_s <= 0 or self.probe_timeout_s <= 0:
            raise ValueError("health probes: need probe_failures >= 1 and positive interval and timeout")


def recent(restarts: Iterable[float], now: float, policy: RestartPolicy) -> list[float]:
    """The restart times that still count at ``now`` (inside the crash-loop window)."""
    return [t for t in restarts if now - t < policy.loop_window_s]


def restart_delay(restarts: Sequence[float], now: float, policy: RestartPolicy) -> float:
    """Seconds to wait before the next restart, given the earlier restart times.

    The first restart in a quiet window waits ``base_s``; each further one inside the window
    doubles it, up to ``cap_s``. A child that stayed up for a whole window starts again at ``base_s``.
    """
    n = len(recent(restarts, now, policy))
    return float(min(policy.cap_s, policy.base_s * 2 ** n))


def crash_loop(restarts: Sequence[float], now: float, policy: RestartPolicy) -> bool:
    """Whether one more restart at ``now`` would exceed ``loop_max`` restarts inside the window."""
    return len(recent(restarts, now, policy)) >= policy.loop_max


class State(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPED = "stopped"


Probe = Callable[[float], bool]
"""A health check with a timeout in seconds: True while the child answers."""


def http_probe(url: str) -> Probe:
    """A probe that GETs ``url`` (``/healthz``) and wants a 200."""

    def probe(timeout: float) -> bool:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError, ValueError):
            return False

    return probe


def redis_probe(host: str, port: int) -> Probe:
    """A probe that sends ``PING`` and wants ``+PONG``."""

    def probe(timeout: float) -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    return probe


@dataclass
class Child:
    """One supervised process: how to start it, how to tell it is ready, how to tell it is alive."""

    name: str
    spawn: Callable[[], subprocess.Popen[bytes]]
    probe: Probe
    ready: Callable[[], bool]
    """True once the (re)started process announced readiness (its ready file exists)."""
    before_spawn: Callable[[], None] = lambda: None
    """Run before every spawn (e.g. remove a stale ready file)."""
    proc: subprocess.Popen[bytes] | None = None
    state: State = State.STOPPED
    restarts: deque[float] = field(default_factory=lambda: deque(maxlen=64))
    restart_at: float = 0.0
    started_at: float = 0.0
    next_probe_at: float = 0.0
    failed_probes: int = 0


class CrashLoop(Exception):
    """A child keeps dying: the system stops rather than flap forever."""

    def __init__(self, name: str, restarts: int, window_s: float, status: int | None) -> None:
        super().__init__(f"{name} crashed {restarts + 1} times within {window_s:.0f}s (last exit status {status}); "
                         f"stopping. See its log above.")
        self.name = name


class Supervisor:
    """Runs the children, restarts the ones that crash or hang, and stops them in reverse order.

    Args:
        children: in start order (a dependency before what depends on it).
        policy: restart and probe timings.
        clock: monotonic seconds (injectable for tests).
        registry: where the ``mqchat_up_*`` metrics are registered (served when ``ops.up_port`` is set).
    """

    def __init__(self, children: Sequence[Child], policy: RestartPolicy, *,
                 clock: Callable[[], float] = time.monotonic, registry: CollectorRegistry | None = None) -> None:
        self.children = list(children)
        self.policy = policy
        self._clock = clock
        self.registry = registry or CollectorRegistry()
        self._restarts = Counter("mqchat_up_restarts", "Children restarted by mqchat up, by reason.",
                                 ["process", "reason"], registry=self.registry)
        self._up = Gauge("mqchat_up_child_running", "1 while the child is running and answering its health probe.",
                         ["process"], registry=self.registry)

    # ------------------------------------------------------------------------------ start and stop

    def start(self, child: Child) -> None:
        """Spawn ``child`` now; it counts as starting until it announces readiness."""
        child.before_spawn()
        child.proc = child.spawn()
        now = self._clock()
        child.state, child.started_at, child.failed_probes = State.STARTING, now, 0
        child.next_probe_at = now + self.policy.probe_interval_s

    def stop_all(self, timeout_s: float) -> None:
        """SIGTERM each child in reverse start order and wait for it (then SIGKILL)."""
        for child in reversed(self.children):
            proc, child.state = child.proc, State.STOPPED
            self._up.labels(child.name).set(0)
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)  # a stopped (SIGSTOP) child cannot act on SIGTERM
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0fs; killing it", child.name, timeout_s)
                proc.kill()
                proc.wait()

    # ------------------------------------------------------------------------------------- ticking

    def tick(self) -> None:
        """Check every child once: exits, readiness, probes and due restarts.

        Raises:
            CrashLoop: a child died more than ``loop_max`` times within the window.
        """
        for child in self.children:
            now = self._clock()
            if child.state is State.BACKOFF:
                if now >= child.restart_at:
                    logger.warning("restarting %s", child.name)
                    self.start(child)
                continue
            if child.state is State.STOPPED or child.proc is None:
                continue
            status = child.proc.poll()
            if status is not None:
                self._crashed(child, now, status, reason="exited")
            elif child.state is State.STARTING:
                if child.ready():
                    self.running(child)
                    logger.warning("%s is running again (pid %d)", child.name, child.proc.pid)
                elif now - child.started_at > self.policy.ready_timeout_s:
                    self._kill(child)
                    self._crashed(child, now, None, reason="not_ready")
            elif now >= child.next_probe_at:
                child.next_probe_at = now + self.policy.probe_interval_s
                if child.probe(self.policy.probe_timeout_s):
                    child.failed_probes = 0
                    self._up.labels(child.name).set(1)
                    continue
                child.failed_probes += 1
                self._up.labels(child.name).set(0)
                logger.warning("%s did not answer its health probe (%d of %d)", child.name, child.failed_probes,
                               self.policy.probe_failures)
                if child.failed_probes >= self.policy.probe_failures:
                    self._kill(child)
                    self._crashed(child, self._clock(), None, reason="hung")

    def running(self, child: Child) -> None:
        """Mark ``child`` as running (its readiness was awaited by the caller)."""
        child.state, child.failed_probes = State.RUNNING, 0
        child.next_probe_at = self._clock() + self.policy.probe_interval_s
        self._up.labels(child.name).set(1)

    def _kill(self, child: Child) -> None:
        if child.proc is not None and child.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()  # SIGKILL also ends a stopped process
            child.proc.wait()

    def _crashed(self, child: Child, now: float, status: int | None, *, reason: str) -> None:
        self._up.labels(child.name).set(0)
        if crash_loop(child.restarts, now, self.policy):
            child.state = State.STOPPED
            raise CrashLoop(child.name, len(recent(child.restarts, now, self.policy)), self.policy.loop_window_s,
                            status)
        delay = restart_delay(child.restarts, now, self.policy)
        child.restarts.append(now)
        child.state, child.restart_at = State.BACKOFF, now + delay
        self._restarts.labels(child.name, reason).inc()
        what = f"exited with status {status}" if reason == "exited" else \
            ("stopped answering its health probe" if reason == "hung" else "did not become ready")
        logger.warning("%s %s; restarting in %.1fs (restart %d within %.0fs)", child.name, what, delay,
                       len(recent(child.restarts, now, self.policy)), self.policy.loop_window_s)

