"""Filters from request parameters, cursors, snippets and the index factory."""

from __future__ import annotations

from pathlib import Path

import pytest

import mqchat.search
from mqchat.errors import ConfigError
from mqchat.search import InvalidSearch, SearchFilters, open_search_index, parse
from mqchat.search.base import clean_body, decode_cursor, encode_cursor, render_snippet
from mqchat.search.factory import default_url
from mqchat.search.sqlite import SqliteSearchIndex


def test_filters_from_params() -> None:
    f = SearchFilters.from_params({"channel": "c1", "server": "s1", "from": "bob", "before": "200", "after": "100",
                                   "has": "file"})
    assert f == SearchFilters(channel="c1", server="s1", sender="bob", before=200, after=100, has_file=True)
    assert SearchFilters.from_params({}) == SearchFilters()


@pytest.mark.parametrize(("params", "code"), [
    ({"chanel": "c1"}, "unknown_filter"),
    ({"q": "x"}, "unknown_filter"),
    ({"has": "link"}, "invalid_filter"),
    ({"before": "yesterday"}, "invalid_filter"),
    ({"after": "-5"}, "invalid_filter"),
    ({"after": "1" * 30}, "invalid_filter"),
    ({"before": "١٢"}, "invalid_filter"),  # Arabic-Indic digits: isdigit() but not ASCII
    ({"channel": "no spaces"}, "invalid_filter"),
    ({"from": "x" * 65}, "invalid_filter"),
    ({"server": ""}, "invalid_filter"),
])
def test_bad_filters(params: dict[str, str], code: str) -> None:
    with pytest.raises(InvalidSearch) as info:
        SearchFilters.from_params(params)
    assert info.value.code == code


def test_cursor_round_trip_and_binding() -> None:
    q, f = parse("hello"), SearchFilters(channel="c1")
    cursor = encode_cursor(q, f, 1_700_000_000_000, 12345)
    assert decode_cursor(cursor, q, f) == (1_700_000_000_000, 12345)
    with pytest.raises(InvalidSearch, match="cursor_mismatch"):
        decode_cursor(cursor, parse("hello*"), f)
    with pytest.raises(InvalidSearch, match="cursor_mismatch"):
        decode_cursor(cursor, q, SearchFilters())
    with pytest.raises(InvalidSearch, match="invalid_cursor"):
        decode_cursor(cursor[:-3], q, f)


def test_snippet_rendering() -> None:
    assert render_snippet("a <b> \ue000c&d\ue001") == "a &lt;b&gt; <mark>c&amp;d</mark>"
    assert clean_body("x\ue000y\ue001z\x00\ud800ﬁ") == "x y z ?fi"


async def test_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for url in (str(tmp_path / "a.db"), f"sqlite:///{tmp_path / 'b.db'}"):
        index = await open_search_index(url)
        assert isinstance(index, SqliteSearchIndex)
        await index.close()
    assert (tmp_path / "b.db").exists()
    data = tmp_path / "data"
    index = await open_search_index(default_url(data))
    await index.close()
    assert (data / "search.db").exists()
    monkeypatch.chdir(tmp_path)
    assert default_url(Path("rel")) == "sqlite:///rel/search.db"
    index = await open_search_index(default_url(Path("rel")))
    await index.close()
    assert (tmp_path / "rel" / "search.db").exists()
    for bad in ("redis://x", "sqlite://relative.db", "sqlite:///"):
        with pytest.raises(ConfigError):
            await open_search_index(bad)


async def test_a_newer_sqlite_schema_is_refused(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "s.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(mqchat.search.SearchError, match="newer"):
        await SqliteSearchIndex.open(path)


def test_exported_names_exist() -> None:
    for name in mqchat.search.__all__:
        assert hasattr(mqchat.search, name), name


@pytest.mark.postgres
async def test_postgres_language_is_checked(postgres_dsn: str) -> None:
    from mqchat.search.postgres import PostgresSearchIndex

    with pytest.raises(ConfigError, match="not a text search configuration"):
        await PostgresSearchIndex.open(postgres_dsn, language="klingon")
    with pytest.raises(ConfigError, match="expected a text search configuration name"):
        await PostgresSearchIndex.open(postgres_dsn, language="english; DROP TABLE x")
    index = await PostgresSearchIndex.open(postgres_dsn, language="french")
    assert (index.language, index.simple, index.unaccent) == ("mqchat_french", "mqchat_simple", True)
    await index.close()
    with pytest.raises(ConfigError, match="built for language 'french'"):
        await PostgresSearchIndex.open(postgres_dsn, language="english")
    again = await open_search_index(postgres_dsn, language="french")
    await again.close()


@pytest.mark.postgres
async def test_postgres_without_unaccent_falls_back_and_says_so(postgres_dsn: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A role that may not create extensions: stock configurations, a warning, accents then matter."""
    import psycopg

    from mqchat.search import SearchDoc
    from mqchat.search.postgres import PostgresSearchIndex

    database = postgres_dsn.rsplit("/", 1)[1]
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plain')"
                     " THEN CREATE ROLE plain LOGIN; END IF; END $$")
        conn.execute(f'REVOKE CREATE ON DATABASE "{database}" FROM PUBLIC')
        conn.execute("GRANT CREATE, USAGE ON SCHEMA public TO plain")
    plain_dsn = postgres_dsn.replace("://mqchat@", "://plain@")
    with caplog.at_level("WARNING", logger="mqchat.search.postgres"):
        index = await PostgresSearchIndex.open(plain_dsn)
    try:
        assert (index.language, index.simple, index.unaccent) == ("english", "simple", False)
        assert any("unaccent" in r.getMessage() and "accents will not be folded" in r.getMessage()
                   for r in caplog.records)
        await index.index([SearchDoc(id=1, channel="c", sender="s", ts=1, seq=1, body="Un Café noir")])
        assert [h.id for h in (await index.search(parse("CAFÉ"), visible_channels=["c"])).hits] == [1]
        assert (await index.search(parse("cafe"), visible_channels=["c"])).hits == []
    finally:
        await index.close()
    reopened = await PostgresSearchIndex.open(plain_dsn)  # the choice is recorded, not retried
    assert reopened.unaccent is False
    await reopened.close()
