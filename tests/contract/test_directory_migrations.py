"""Directory schemas: PostgreSQL migrations (``mqchat migrate``), SQLite upgraded in place, and the
factory choosing the backend from ``directory.url``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mqchat.cli import main
from mqchat.config import load_settings
from mqchat.errors import ConfigError
from mqchat.storage import postgres
from mqchat.storage.factory import open_directory
from mqchat.storage.postgres import PostgresDirectory
from mqchat.storage.sqlite import DIRECTORY_SCHEMA, SqliteDirectory


@pytest.mark.postgres
async def test_postgres_migrations_apply_once_and_open_refuses_an_unmigrated_database(postgres_dsn: str) -> None:
    assert await postgres.schema_version(postgres_dsn) == 0
    with pytest.raises(ConfigError, match="mqchat migrate"):
        await PostgresDirectory(postgres_dsn).open()
    assert await postgres.migrate(postgres_dsn) == list(range(1, postgres.LATEST + 1))
    assert await postgres.migrate(postgres_dsn) == []
    assert await postgres.schema_version(postgres_dsn) == postgres.LATEST
    d = await PostgresDirectory(postgres_dsn).open()
    try:
        assert (await d.create_user("x", "h", now_ms=1)).username == "x"
    finally:
        await d.close()


@pytest.mark.postgres
def test_mqchat_migrate_applies_the_postgres_directory_schema(postgres_dsn: str, tmp_path: Path) -> None:
    assert main(["migrate", "--directory", postgres_dsn]) == 0
    assert main(["migrate", "--directory", postgres_dsn]) == 0  # nothing left to do


@pytest.mark.postgres
async def test_the_factory_opens_postgres_when_directory_url_is_set(postgres_dsn: str, tmp_path: Path) -> None:
    await postgres.migrate(postgres_dsn)
    settings = load_settings(None, data_dir=tmp_path, directory={"url": postgres_dsn, "pool_max": 2})
    d = await open_directory(settings)
    try:
        assert isinstance(d, PostgresDirectory)
        assert not (tmp_path / "directory.db").exists()
    finally:
        await d.close()


def test_directory_url_must_be_postgres() -> None:
    with pytest.raises(ConfigError, match=r"directory\.url"):
        load_settings(None, directory={"url": "mysql://x/y"})


async def test_a_version_1_sqlite_directory_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "directory.db"
    with sqlite3.connect(path) as conn:
        for statement in filter(str.strip, DIRECTORY_SCHEMA[0].split(";")):
            conn.execute(statement)
        conn.execute("PRAGMA user_version=1")
        conn.execute("INSERT INTO users VALUES ('u1', 'Old', 'h', 5)")
        conn.execute("INSERT INTO channels VALUES ('c1', 'group', 'g', 'u1', 6, NULL)")
        conn.execute("INSERT INTO members VALUES ('c1', 'u1', 6)")
    conn.close()
    d = await SqliteDirectory(path).open()
    try:
        old = await d.user_by_name("old")
        assert old is not None
        assert (old.user_id, old.display_name) == ("u1", None)
        assert await d.channel_ids_of("u1") == frozenset({"c1"})
        server = await d.create_server("u1", "New", now_ms=10)
        assert [s.server_id for s in await d.servers_of("u1")] == [server.server_id]
    finally:
        await d.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(DIRECTORY_SCHEMA)
    conn.close()


def test_up_directory_flag_reaches_every_child_process(tmp_path: Path) -> None:
    from mqchat import cli

    dsn = "postgresql://mqchat@127.0.0.1:5999/mqchat"
    args = cli.parser().parse_args(["up", "--directory", dsn, "--data-dir", str(tmp_path)])
    settings = cli.settings_from_args(args)
    assert settings.directory.url == dsn
    assert cli.child_env(settings, "redis://127.0.0.1:1/0")["MQCHAT_DIRECTORY__URL"] == dsn
    with pytest.raises(ConfigError):
        cli.settings_from_args(cli.parser().parse_args(["up", "--directory", "sqlite:///x.db"]))
