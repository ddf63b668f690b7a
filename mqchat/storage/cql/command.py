"""The schema commands: ``migrate`` (apply pending migrations) and ``render`` (print the CQL).

``python -m mqchat.storage.cql migrate`` runs :func:`migrate_command`; ``mqchat migrate`` can call
the same function. Both read the ``cassandra`` settings section (environment, TOML file).
"""

from __future__ import annotations

import asyncio
import logging

from mqchat.config import Settings
from mqchat.errors import StorageError
from mqchat.storage.cql import load_schema

logger = logging.getLogger(__name__)


def migrate_command(settings: Settings) -> int:
    """Bring ``settings.cassandra.keyspace`` to the latest schema; an exit status."""
    from mqchat.storage.cassandra import migrate  # the driver is loaded only when needed

    try:
        applied = asyncio.run(migrate(settings.cassandra))
    except StorageError as exc:
        logger.error("migration failed: %s", exc)
        return 1
    latest = load_schema(settings.cassandra.keyspace).latest
    if applied:
        logger.info("keyspace %s: applied migrations %s; now at %d", settings.cassandra.keyspace, applied, latest)
    else:
        logger.info("keyspace %s: already at migration %d", settings.cassandra.keyspace, latest)
    return 0


def render_command(settings: Settings) -> str:
    """The whole schema for ``settings.cassandra`` as one CQL script (for cqlsh -f)."""
    c = settings.cassandra
    schema = load_schema(c.keyspace, replication_factor=c.replication_factor, local_dc=c.local_dc)
    lines = [f"-- mqchat schema for keyspace {c.keyspace}, rendered from schema.cql (migrations 1..{schema.latest})"]
    lines += [f"{statement};" for statement in schema.statements()]
    lines += [f"INSERT INTO {c.keyspace}.schema_migrations (version, name, applied_ms) "
              f"VALUES ({m.version}, '{m.name}', 0) IF NOT EXISTS;" for m in schema.migrations]
    return "\n\n".join(lines) + "\n"
