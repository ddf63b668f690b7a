"""``python -m api``: run the HTTP API."""

from __future__ import annotations

import asyncio
import sys

from api.app import main
from mqchat import lifecycle
from mqchat.config import load_settings
from mqchat.errors import ConfigError
from mqchat.log import setup_logging


def cli() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"api: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level, json_lines=settings.log_json, process="api")

    async def root(stop: asyncio.Event) -> None:
        await main(settings, stop)

    try:
        lifecycle.run(root)
    except ConfigError as exc:
        print(f"api: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
