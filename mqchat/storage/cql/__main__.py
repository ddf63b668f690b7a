"""``python -m mqchat.storage.cql {migrate,render}``: apply or print the Cassandra schema.

Settings come from the environment (``MQCHAT_CASSANDRA__HOSTS='["db1","db2"]'``,
``MQCHAT_CASSANDRA__KEYSPACE``, ...) or the TOML file named by ``--config`` / ``MQCHAT_CONFIG``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mqchat.config import load_settings
from mqchat.errors import ConfigError
from mqchat.log import setup_logging
from mqchat.storage.cql.command import migrate_command, render_command


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    p = argparse.ArgumentParser(prog="python -m mqchat.storage.cql", description=__doc__)
    p.add_argument("--config", type=Path, help="TOML settings file (default: $MQCHAT_CONFIG)")
    p.add_argument("command", choices=["migrate", "render"],
                   help="migrate: apply pending migrations to the keyspace; render: print the CQL script")
    args = p.parse_args(argv)
    try:
        settings = load_settings(args.config)
        if args.command == "render":
            print(render_command(settings), end="")
            return 0
        setup_logging(settings.log_level, json_lines=settings.log_json, process="migrate")
        return migrate_command(settings)
    except ConfigError as exc:
        print(f"mqchat: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
