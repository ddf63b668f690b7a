"""``python -m workers``: run the workers with settings from the environment / ``MQCHAT_CONFIG``."""

from __future__ import annotations

import asyncio
import sys

from mqchat import lifecycle
from mqchat.config import load_settings
from mqchat.errors import ConfigError
from mqchat.log import setup_logging
from workers.app import main


def cli() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"workers: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, json_lines=settings.log_json, process="workers")

    async def root(stop: asyncio.Event) -> None:
        await main(settings, stop)

    try:
        lifecycle.run(root)
    except ConfigError as exc:
        print(f"workers: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
