"""``python -m bench.amqtt_broker --port N``: plain upstream amqtt, as its ``amqtt`` command runs it.

The configuration is the one the ``amqtt`` CLI loads when given none (``amqtt/scripts/
default_broker.yaml``: a TCP listener, anonymous allowed, the event and packet logger plugins and
``$SYS`` every 20 s), with the listener bound to ``127.0.0.1:N`` instead of ``0.0.0.0:1883``, on
asyncio's default event loop like the CLI. Logging is at WARNING (the CLI's default is INFO; see
:mod:`bench.targets`). None of mqchat's broker code is involved.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path
from typing import Any

import amqtt.scripts
from amqtt.broker import Broker
from amqtt.utils import read_yaml_config


def config(port: int) -> dict[str, Any]:
    """The amqtt CLI's default configuration, listening on ``127.0.0.1:port``."""
    conf: dict[str, Any] = read_yaml_config(Path(amqtt.scripts.__file__).parent / "default_broker.yaml")
    conf["listeners"]["default"]["bind"] = f"127.0.0.1:{port}"
    return conf


async def serve(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    broker = Broker(config(port))
    await broker.start()
    try:
        await stop.wait()
    finally:
        await broker.shutdown()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.amqtt_broker", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="[%(asctime)s] :: %(levelname)s - %(message)s")
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
