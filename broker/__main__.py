"""``python -m broker [--host H] [--port N] [--no-auth]``: run the embedded broker.

Settings come from the environment / ``MQCHAT_CONFIG`` as for every process; ``--host`` and
``--port`` override ``mqtt.host`` and ``mqtt.port``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from broker.app import main
from mqchat.config import Settings, load_settings
from mqchat.errors import ConfigError
from mqchat.lifecycle import serve_process


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker", description="Run the mqchat MQTT broker.")
    parser.add_argument("--host", help="listen address (overrides mqtt.host)")
    parser.add_argument("--port", type=int, help="MQTT port (overrides mqtt.port)")
    parser.add_argument("--no-auth", action="store_true", help="anonymous, no ACL, loopback only")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = {}
    for field in ("host", "port"):
        if getattr(args, field) is not None:
            overrides.setdefault("mqtt", {})[field] = getattr(args, field)
    try:
        settings = load_settings(**overrides)
        if args.no_auth and settings.mqtt.host not in ("127.0.0.1", "::1", "localhost"):
            raise ConfigError("--no-auth binds to loopback only; pass --host 127.0.0.1 (or set mqtt.host)")
    except ConfigError as exc:
        print(f"broker: {exc}", file=sys.stderr)
        return 2

    async def run(settings: Settings, stop: asyncio.Event) -> None:
        await main(settings, stop, no_auth=args.no_auth)

    return serve_process("broker", run, settings)


if __name__ == "__main__":
    sys.exit(cli())
