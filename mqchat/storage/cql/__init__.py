"""The Cassandra schema as data: load ``schema.cql``, fill its placeholders, split it into migrations.

``schema.cql`` (next to this module) is the single source of the schema. It holds a preamble
(keyspace and the ``schema_migrations`` ledger, applied every time) and numbered sections
``-- migration N: <name>``. This module only parses and renders; applying happens in
:func:`mqchat.storage.cassandra.migrate`, run by ``python -m mqchat.storage.cql migrate`` and never
on import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from string import Template

from mqchat.errors import ConfigError

_SECTION = re.compile(r"^-- migration (\d+): (.+)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered section of ``schema.cql``."""

    version: int
    name: str
    statements: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Schema:
    """``schema.cql`` rendered for one keyspace."""

    preamble: tuple[str, ...]
    migrations: tuple[Migration, ...]

    @property
    def latest(self) -> int:
        return self.migrations[-1].version if self.migrations else 0

    def statements(self) -> list[str]:
        """Every statement, preamble first: what a fresh cluster needs."""
        return [*self.preamble, *(s for m in self.migrations for s in m.statements)]


def schema_text() -> str:
    """The raw ``schema.cql``, placeholders included."""
    return resources.files(__package__).joinpath("schema.cql").read_text(encoding="utf-8")


def replication_map(replication_factor: int, local_dc: str | None) -> str:
    """The keyspace's replication: NetworkTopologyStrategy, ``replication_factor`` copies per DC.

    With ``local_dc`` the factor is set for that DC only (add DCs with ALTER KEYSPACE when the
    cluster grows); without it Cassandra 4.0+ expands ``replication_factor`` to every DC.
    """
    if replication_factor < 1:
        raise ConfigError("cassandra.replication_factor must be at least 1")
    if local_dc is not None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", local_dc):
            raise ConfigError(f"cassandra.local_dc {local_dc!r} is not a data centre name")
        return f"{{'class': 'NetworkTopologyStrategy', '{local_dc}': {replication_factor}}}"
    return f"{{'class': 'NetworkTopologyStrategy', 'replication_factor': {replication_factor}}}"


def _split(text: str) -> tuple[str, ...]:
    """Statements of a CQL fragment: comments dropped, split on ``;`` at the end of a line."""
    lines = [line.split("--", 1)[0].rstrip() for line in text.splitlines()]
    body = "\n".join(line for line in lines if line.strip())
    return tuple(s.strip() for s in re.split(r";\s*(?:\n|$)", body) if s.strip())


def load_schema(keyspace: str, *, replication_factor: int = 3, local_dc: str | None = None) -> Schema:
    """``schema.cql`` rendered for ``keyspace``, split into its preamble and numbered migrations.

    Raises:
        ConfigError: the keyspace name or DC name is not usable in CQL.
        ValueError: the file's sections are not numbered 1, 2, 3, ... (a broken schema file).
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,47}", keyspace):
        raise ConfigError(f"cassandra.keyspace {keyspace!r} is not a valid keyspace name")
    text = Template(schema_text()).substitute(
        keyspace=keyspace, replication=replication_map(replication_factor, local_dc),
    )
    marks = list(_SECTION.finditer(text))
    preamble = _split(text[: marks[0].start()] if marks else text)
    migrations = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        migrations.append(Migration(int(mark.group(1)), mark.group(2).strip(), _split(text[mark.end() : end])))
    numbers = [m.version for m in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"schema.cql migrations must be numbered 1..n in order, found {numbers}")
    return Schema(preamble, tuple(migrations))
