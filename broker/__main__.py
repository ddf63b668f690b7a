"""``python -m broker [--no-auth]``: run the embedded broker."""

from __future__ import annotations

import argparse
import asyncio
import sys

from broker.app import main
from mqchat.config import Settings, load_settings
from mqchat.errors import ConfigError
from mqchat.lifecycle import serve_process


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m broker", description="Run the mqchat MQTT broker.")
    parser.add_argument("--no-auth", action="store_true", help="anonymous, no ACL, loopback only")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        if args.no_auth and settings.mqtt.host not in ("127.0.0.1", "::1", "localhost"):
            raise ConfigError("--no-auth binds to loopback only; set mqtt.host to 127.0.0.1")
    except ConfigError as exc:
        print(f"broker: {exc}", file=sys.stderr)
        return 2

    async def run(settings: Settings, stop: asyncio.Event) -> None:
        await main(settings, stop, no_auth=args.no_auth)

    return serve_process("broker", run, settings)


if __name__ == "__main__":
    sys.exit(cli())
