"""Process lifecycle: signals, graceful shutdown and the service identity of mqchat processes.

Every ``__main__`` runs its composition root through :func:`run`. The root receives a ``stop``
event; SIGTERM or SIGINT sets it, and the root drains in-flight work before returning. A second
signal cancels the root outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from mqchat import auth
from mqchat.config import Settings
from mqchat.errors import ConfigError

logger = logging.getLogger(__name__)


#: After the first SIGTERM/SIGINT a process has this long to drain before it is cancelled, and
#: after a cancellation this long again before it exits at once, whatever it is waiting on.
SHUTDOWN_GRACE_S = 30.0
CANCEL_GRACE_S = 5.0
EXIT_STUCK = 70


def _exit_now(why: str) -> None:
    logger.error("%s; exiting now", why)
    logging.shutdown()
    os._exit(EXIT_STUCK)


#: Files created by mqchat's processes: owner only.
PRIVATE_UMASK = 0o077


def run(main: Callable[[asyncio.Event], Awaitable[None]], *, grace_s: float = SHUTDOWN_GRACE_S) -> None:
    """Run ``main(stop)`` until it returns.

    The first SIGTERM/SIGINT sets ``stop`` (drain); a second one, or ``grace_s`` without finishing,
    cancels ``main``; if even that does not end it within :data:`CANCEL_GRACE_S` (a dependency that
    swallows cancellation), the process exits with status 70. A stopping process always stops.

    Files the process creates are private to its user (umask 077: 0600 files, 0700 directories):
    the data files hold password hashes, messages and push tokens.
    """
    os.umask(PRIVATE_UMASK)

    async def root() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        task = asyncio.current_task()
        assert task is not None

        def cancel(why: str) -> None:
            logger.warning("%s: cancelling", why)
            task.cancel()
            loop.call_later(CANCEL_GRACE_S, _exit_now, "still running after cancellation")

        def on_signal(signum: int) -> None:
            name = signal.Signals(signum).name
            if stop.is_set():
                cancel(f"second {name}")
            else:
                logger.info("%s: shutting down gracefully", name)
                stop.set()
                loop.call_later(grace_s, cancel, f"not stopped {grace_s:.0f}s after {name}")

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await main(stop)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    with contextlib.suppress(asyncio.CancelledError), asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(root())


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed (Linux, macOS): the broker's fan-out and every process's
    socket handling cost noticeably less CPU on it. ``None``: asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def service_credentials(settings: Settings, service: str, instance: str) -> tuple[str, str, str]:
    """``(client_id, username, password)`` for one of mqchat's own processes on the broker.

    The client id is unique per running instance when ``instance`` is (:func:`instance_id`): with a
    minted token it is ``{service}:{instance}``; with a configured ``auth.service_token`` (the same
    for every replica) it is the token's ``{user}:{device}~{instance}``. So two instances of a
    process never take each other's session over.

    Raises:
        ConfigError: no way to authenticate (no signing key and no ``auth.service_token``).
    """
    if settings.auth.service_token is not None:
        token = settings.auth.service_token.get_secret_value()
        principal = auth.verify(auth.load_keys(settings), token, now=int(time.time()))
        if not principal.is_service:
            raise ConfigError("auth.service_token must carry role 'service'")
        return f"{principal.client_id}{auth.INSTANCE_SEP}{instance}", principal.user_id, token
    keys = auth.load_keys(settings)
    # Service tokens are re-minted at every start; a long lifetime only matters for reconnects.
    # Scoped to this service's topics (mqchat.policy) when it is one of mqchat's own.
    scope = service.removeprefix(auth.SERVICE_PREFIX)
    token = auth.issue(keys, user_id=service, device_id=instance, role="service", now=int(time.time()),
                       ttl_s=365 * 24 * 3600, service=scope if scope in auth.SERVICES else None)
    return auth.client_id(service, instance), service, token


def instance_id(prefix: str) -> str:
    """An id for one running instance of a replicated process (API, workers): host name and pid, so
    replicas never share an MQTT client id (a broker disconnects the older of two equal ids)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())
    return f"{prefix}{os.getpid()}-{host}"[:64]


def ready_file(settings: Settings, process: str) -> Path:
    """Where ``process`` announces that it is serving (used by ``mqchat up`` and the tests)."""
    return settings.data_dir / "run" / f"{process}.ready"


def mark_ready(settings: Settings, process: str) -> None:
    path = ready_file(settings, process)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{os.getpid()}\n")


def clear_ready(settings: Settings, process: str) -> None:
    ready_file(settings, process).unlink(missing_ok=True)


async def supervised(name: str, work: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
    """Run ``work`` until ``stop``, restarting it with capped backoff when it fails (broker or Redis down).

    Args:
        name: what ``work`` is, for the log line of each restart.
        work: the loop to keep running; it returns or raises, and is started again until ``stop``.
        stop: set at shutdown; a waiting restart is abandoned at once.
    """
    delay = 0.5
    while not stop.is_set():
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("%s failed (%s); restarting in %.1fs", name, exc, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10.0)


class Readiness:
    """Whether the process can do its job right now (served as ``/readyz``)."""

    def __init__(self) -> None:
        self.ok = False

    def __call__(self) -> bool:
        return self.ok


def serve_process(process: str, main: Callable[[Settings, asyncio.Event], Awaitable[None]],
                  settings: Settings | None = None) -> int:
    """The whole ``__main__`` of a process: load settings (unless given), set up logging, run
    ``main(settings, stop)`` until SIGTERM/SIGINT. Returns the exit status: 2 for bad settings."""
    from mqchat.config import load_settings
    from mqchat.log import setup_logging

    try:
        if settings is None:
            settings = load_settings()
        setup_logging(settings.log_level, json_lines=settings.log_json, process=process)
        resolved = settings

        async def root(stop: asyncio.Event) -> None:
            await main(resolved, stop)

        run(root)
    except ConfigError as exc:
        print(f"{process}: {exc}", file=sys.stderr)
        return 2
    return 0
