"""schema.cql: parsing, rendering, versioned migrations applied once by the command (never on import)."""

from __future__ import annotations

import re

import pytest

from mqchat.errors import ConfigError
from mqchat.storage.cassandra import STATEMENTS, migrate
from mqchat.storage.cql import load_schema, schema_text
from mqchat.storage.cql.__main__ import main as cql_main
from tests.cassandra_standin import StandIn
from tests.cassandra_standin.harness import Target


def test_schema_has_a_preamble_and_numbered_migrations() -> None:
    schema = load_schema("chat")
    assert schema.preamble[0].startswith("CREATE KEYSPACE IF NOT EXISTS chat")
    assert "'class': 'NetworkTopologyStrategy', 'replication_factor': 3" in schema.preamble[0]
    assert "chat.schema_migrations" in schema.preamble[1]
    assert [m.version for m in schema.migrations] == list(range(1, schema.latest + 1))
    messages = next(s for s in schema.statements() if "TABLE IF NOT EXISTS chat.messages " in s)
    assert "PRIMARY KEY ((channel_id, epoch, bucket), seq)" in messages
    assert "CLUSTERING ORDER BY (seq DESC)" in messages
    assert "last_seq   bigint STATIC" in messages
    assert all(s.startswith(("CREATE KEYSPACE IF NOT EXISTS", "CREATE TABLE IF NOT EXISTS", "ALTER TABLE chat."))
               for s in schema.statements())
    # Columns are added by ALTER, one statement per migration (no half-applied migration).
    assert all(sum(s.startswith("ALTER") for s in m.statements) <= 1 for m in schema.migrations)


def test_every_table_our_statements_use_is_in_the_schema() -> None:
    text = schema_text()
    for cql in STATEMENTS.values():
        found = re.search(r"(?:FROM|INTO|UPDATE)\s+(\w+)", cql)
        assert found is not None, cql
        table = found.group(1)
        assert f"$keyspace.{table} (" in text, table


def test_replication_follows_the_settings() -> None:
    schema = load_schema("chat", replication_factor=5, local_dc="eu-west")
    assert "{'class': 'NetworkTopologyStrategy', 'eu-west': 5}" in schema.preamble[0]
    with pytest.raises(ConfigError):
        load_schema("Bad-Name")
    with pytest.raises(ConfigError):
        load_schema("chat", local_dc="dc'; DROP")


async def test_migrations_apply_once(target: Target, standin: StandIn) -> None:
    # The harness migrated the keyspace already.
    assert set(standin.model.migrations) == {m.version for m in load_schema("k").migrations}
    ddl = len(standin.ddl)
    assert await migrate(target.settings, tuning=target.tuning) == []
    again = standin.ddl[ddl:]
    assert len(again) == len(load_schema("k").preamble)  # only the idempotent preamble re-ran


def test_render_prints_a_cqlsh_script(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQCHAT_CASSANDRA__KEYSPACE", "prod_chat")
    monkeypatch.setenv("MQCHAT_CASSANDRA__REPLICATION_FACTOR", "3")
    assert cql_main(["render"]) == 0
    out = capsys.readouterr().out
    assert "CREATE TABLE IF NOT EXISTS prod_chat.messages (" in out
    assert "INSERT INTO prod_chat.schema_migrations (version, name, applied_ms) VALUES (1," in out
    assert "$" not in out
