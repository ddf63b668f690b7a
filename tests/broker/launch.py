"""Start a broker under test in its own process, on free ports: ours or plain upstream amqtt.

Two engines, given the same configuration (``broker.app.amqtt_config(settings)``, settings from
``MQCHAT_*`` variables):

- ``"mqchat"``: our broker through its real entry points: ``python -m mqchat.cli broker --port N
  --no-auth`` for a bare broker, ``python -m broker`` with JWT authentication and the topic ACL;
- ``"amqtt"``: :class:`amqtt.broker.Broker` of amqtt 0.12.1 as published, with none of our fixes
  installed, so a test can show that a defect exists upstream.

Extra plugins (the recording plugin of ``tests.broker.recording``) go into the config's
``plugins`` dict. Our broker has no setting for that, so ``python -m tests.broker.launch mqchat
--plugins FILE`` wraps ``broker.app.amqtt_config`` (the one seam the broker keeps) and then runs
``python -m broker`` as usual.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from harness.ports import free_port
from mqchat import auth
from mqchat.config import load_settings

Engine = Literal["mqchat", "amqtt"]
ENGINES: tuple[Engine, ...] = ("mqchat", "amqtt")
ROOT = Path(__file__).resolve().parents[2]
#: HS256 secret of the authenticated brokers under test (a test value, at least 32 bytes).
SECRET = "broker-hardening-tests-" + "k" * 24
STARTUP_TIMEOUT_S = 30.0


@dataclass
class BrokerProcess:
    """A broker running as a child process (in its own process group)."""

    engine: Engine
    auth: bool
    port: int
    data_dir: Path
    log: Path
    proc: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def token(self, user_id: str, device_id: str, *, service: bool = False) -> str:
        """A valid token for this broker (authenticated brokers only)."""
        keys = auth.load_keys(load_settings(data_dir=self.data_dir, auth={"secret": SECRET}))
        return auth.issue(keys, user_id=user_id, device_id=device_id, now=int(time.time()),
                          role="service" if service else "device")

    def fd_count(self) -> int:
        """Open file descriptors of the broker process (Linux ``/proc``)."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait: the broker's own graceful shutdown. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _create_directory(data_dir: Path) -> None:
    from mqchat.storage.sqlite import SqliteDirectory

    async def create() -> None:
        await (await SqliteDirectory(data_dir / "directory.db").open()).close()

    asyncio.run(create())


def start_broker(engine: Engine, workdir: Path, *, auth: bool = False, env: dict[str, str] | None = None,
                 plugins: dict[str, Any] | None = None) -> BrokerProcess:
    """Start a broker and wait until it accepts connections.

    Args:
        engine: ``"mqchat"`` (ours) or ``"amqtt"`` (plain upstream).
        workdir: a fresh directory for its data and log.
        auth: JWT authentication and the topic ACL (tokens from :meth:`BrokerProcess.token`;
            memberships in ``workdir/data/directory.db``); otherwise anonymous, no ACL.
        env: extra ``MQCHAT_*`` settings.
        plugins: extra amqtt plugins, dotted path → config, added to the config's ``plugins``.
    """
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {
        "MQCHAT_DATA_DIR": str(data_dir),
        "MQCHAT_MQTT__HOST": "127.0.0.1",
        "MQCHAT_MQTT__PORT": str(port),
        "MQCHAT_MQTT__WS_PORT": str(free_port()),
        "MQCHAT_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    if auth:
        _create_directory(data_dir)
        full_env |= {"MQCHAT_AUTH__SECRET": SECRET, "MQCHAT_BROKER__MEMBERSHIP_CACHE_S": "0",
                     "MQCHAT_BROKER__MEMBERSHIP_CACHE_UNFED_S": "0"}
    full_env |= env or {}
    if engine == "mqchat" and not plugins:
        if auth:
            command = [sys.executable, "-m", "broker"]
        else:
            command = [sys.executable, "-m", "mqchat.cli", "broker", "--port", str(port), "--no-auth"]
    else:
        command = [sys.executable, "-m", "tests.broker.launch", engine]
        if not auth:
            command.append("--no-auth")
        if plugins:
            plugins_file = workdir / "plugins.json"
            plugins_file.write_text(json.dumps(plugins))
            command += ["--plugins", str(plugins_file)]
    log = workdir / f"{engine}-broker.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT,
                                start_new_session=True)
    broker = BrokerProcess(engine, auth, port, data_dir, log, proc)
    _wait_listening(broker)
    return broker


def _wait_listening(broker: BrokerProcess) -> None:
    import socket

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", broker.port)) == 0:
                # The probe sends no CONNECT; give the broker a moment to drop it before the
                # test measures anything (file descriptors, connection counts).
                time.sleep(0.05)
                return
        if broker.proc.poll() is not None or time.monotonic() > deadline:
            broker.kill()
            raise RuntimeError(f"{broker.engine} broker did not start (exit {broker.proc.returncode}):\n"
                               f"{broker.log_tail()}")
        time.sleep(0.05)


# --- the child process -------------------------------------------------------------------------


def _config(no_auth: bool, extra: dict[str, Any]) -> dict[str, Any]:
    from broker.app import amqtt_config

    config = amqtt_config(load_settings(), no_auth=no_auth)
    config["plugins"] = {**config["plugins"], **extra}
    return config


async def _run_plain_amqtt(no_auth: bool, extra: dict[str, Any]) -> None:
    """amqtt 0.12.1 as published: its own Broker class, nothing of broker.protocol installed.

    It gets the listeners and plugins of our config, and our native plugins through
    :mod:`tests.broker.upstream`; settings it has no notion of (limits, timeouts) are simply ours
    alone."""
    from amqtt.broker import Broker

    from tests.broker.upstream import PATH

    config = _config(no_auth, {} if no_auth else {PATH: {}})
    config["plugins"] |= extra
    broker = Broker({"listeners": config["listeners"], "plugins": config["plugins"]})
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    logging.getLogger(__name__).info("plain amqtt listening: %s", config["listeners"])
    await stop.wait()
    await broker.shutdown()


def _run_ours(no_auth: bool, extra: dict[str, Any]) -> int:
    import broker.app
    from broker.__main__ import cli

    original = broker.app.amqtt_config

    def with_extra_plugins(settings: Any, *, no_auth: bool = False) -> dict[str, Any]:
        config = original(settings, no_auth=no_auth)
        config["plugins"] = {**config["plugins"], **extra}
        return config

    broker.app.amqtt_config = with_extra_plugins
    return cli(["--no-auth"] if no_auth else [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.broker.launch")
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("--no-auth", action="store_true")
    parser.add_argument("--plugins", type=Path, help="JSON object: extra plugins, dotted path -> config")
    args = parser.parse_args(argv)
    extra: dict[str, Any] = json.loads(args.plugins.read_text()) if args.plugins else {}
    if args.engine == "mqchat":
        return _run_ours(args.no_auth, extra)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_run_plain_amqtt(args.no_auth, extra))
    return 0


if __name__ == "__main__":
    sys.exit(main())
