"""One contract suite over every search backend (SQLite FTS5 and a real PostgreSQL server).

What a user may rely on: words, phrases, prefixes, case and accents folded, mentions and URLs
findable, filters, visibility that cannot be widened, edits and deletes that take effect, paging
that returns every hit once and in order, and bad requests that fail with a typed error.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import pytest

from mqchat.search import (
    MAX_LIMIT,
    InvalidSearch,
    SearchDoc,
    SearchFilters,
    SearchHit,
    SearchIndex,
    parse,
)
from tests.search.conftest import open_index

ALL = ["general", "random", "dm-1", "secret"]
_ids = itertools.count(1_000)


def doc(body: str, *, channel: str = "general", ts: int | None = None, sender: str = "alice",
        server: str | None = "srv1", has_file: bool = False, id: int | None = None) -> SearchDoc:
    msg_id = next(_ids) if id is None else id
    return SearchDoc(id=msg_id, channel=channel, sender=sender, ts=msg_id * 10 if ts is None else ts, seq=msg_id,
                     body=body, server=server, has_file=has_file)


async def ids(index: SearchIndex, q: str, *, visible: list[str] | None = None,
              filters: SearchFilters | None = None) -> list[int]:
    page = await index.search(parse(q), visible_channels=ALL if visible is None else visible,
                              filters=filters or SearchFilters(), limit=MAX_LIMIT)
    assert page.cursor is None, "more hits than one page: widen the test or page"
    return [h.id for h in page.hits]


async def hits(index: SearchIndex, q: str) -> list[SearchHit]:
    return (await index.search(parse(q), visible_channels=ALL, limit=MAX_LIMIT)).hits


# ------------------------------------------------------------------------------ matching


async def test_words_match_all_terms_in_any_order(index: SearchIndex) -> None:
    both, one = doc("the quick brown fox"), doc("a quick reply")
    await index.index([both, one])
    assert await ids(index, "fox quick") == [both.id]
    assert await ids(index, "quick") == [one.id, both.id]
    assert await ids(index, "foxes-never-said") == []


async def test_phrases_match_words_in_sequence(index: SearchIndex) -> None:
    a, b = doc("meet me at the quick brown fox"), doc("brown and quick")
    await index.index([a, b])
    assert await ids(index, '"quick brown"') == [a.id]
    assert await ids(index, '"brown quick"') == []
    assert await ids(index, '"brown and" quick') == [b.id]


async def test_prefixes_find_words_as_you_type(index: SearchIndex) -> None:
    hello, help_, other = doc("Hello there"), doc("need HELP now"), doc("shell")
    await index.index([hello, help_, other])
    assert await ids(index, "hel*") == [help_.id, hello.id]
    assert await ids(index, "hell*") == [hello.id]
    assert await ids(index, "helz*") == []
    assert await ids(index, "there hel*") == [hello.id]


async def test_case_is_folded(index: SearchIndex) -> None:
    d = doc("HeLLo WORLD")
    await index.index([d])
    for q in ("hello", "HELLO", "World", '"hello world"'):
        assert await ids(index, q) == [d.id], q


async def test_accents_are_folded_both_ways(index: SearchIndex) -> None:
    accented, plain, decomposed = doc("un café crème"), doc("cafe au lait"), doc("Cafe\u0301 noir")
    await index.index([accented, plain, decomposed])
    expected = sorted([accented.id, plain.id, decomposed.id], reverse=True)
    for q in ("cafe", "café", "CAFÉ", "Cafe\u0301", "caf*"):
        assert await ids(index, q) == expected, q
    assert await ids(index, "creme") == [accented.id]
    assert await ids(index, "crème") == [accented.id]


async def test_mentions_are_findable(index: SearchIndex) -> None:
    raw, at = doc("ping <@u42> please"), doc("thanks @alice_b for that")
    await index.index([raw, at])
    for q in ("<@u42>", "@u42", "u42"):
        assert await ids(index, q) == [raw.id], q
    for q in ("@alice_b", "alice_b"):
        assert await ids(index, q) == [at.id], q


async def test_urls_are_findable(index: SearchIndex) -> None:
    d = doc("see https://docs.example.com/guide/install?step=2 for details")
    await index.index([d, doc("nothing here")])
    for q in ("https://docs.example.com/guide/install?step=2", "docs.example.com", '"docs.example.com"'):
        assert await ids(index, q) == [d.id], q


@pytest.mark.parametrize("q", ["NEAR", "cats OR dogs", "NOT cats", "cats AND", "-cats", "^cats", "body:cats",
                               "(cats)", "cats)", '"cats', 'cats"', "cats *", "* cats", "NEAR(cats dogs)",
                               "cats:*", "cats & dogs", "cats | dogs", "!cats", "cats <-> dogs", "'cats'",
                               "cats\\", "{cats}", "cats + dogs", "cats~", "\"\" cats", "cats'--"])
async def test_operators_typed_by_the_user_are_plain_text(index: SearchIndex, q: str) -> None:
    cats, dogs = doc("cats purr"), doc("dogs bark")
    await index.index([cats, dogs])
    found = await ids(index, q)
    # Every term is required; none is an operator: "OR" is a word no message has, "-cats" is cats.
    words = {w for w in ("cats", "dogs") if w in q}
    has_other_words = any(w.strip("\"'()*:^-!{}\\~+|&<>") not in ("cats", "dogs", "")
                          for w in q.replace("(", " ").replace(":", " ").split())
    if has_other_words or words == {"cats", "dogs"}:
        assert found == [], q
    else:
        assert found == [cats.id], q


async def test_plain_word_that_is_an_operator_name_is_found(index: SearchIndex) -> None:
    d = doc("Stand NEAR the door OR the window")
    await index.index([d, doc("near-miss")])
    assert await ids(index, "NEAR door OR window") == [d.id]


# ------------------------------------------------------------------------------ filters and visibility


async def test_each_filter_narrows(index: SearchIndex) -> None:
    a = doc("launch plan", channel="general", sender="alice", server="srv1", ts=1_000)
    b = doc("launch plan", channel="random", sender="bob", server="srv1", ts=2_000, has_file=True)
    c = doc("launch plan", channel="dm-1", sender="bob", server=None, ts=3_000)
    await index.index([a, b, c])
    assert await ids(index, "launch") == [c.id, b.id, a.id]
    assert await ids(index, "launch", filters=SearchFilters(channel="random")) == [b.id]
    assert await ids(index, "launch", filters=SearchFilters(server="srv1")) == [b.id, a.id]
    assert await ids(index, "launch", filters=SearchFilters(sender="bob")) == [c.id, b.id]
    assert await ids(index, "launch", filters=SearchFilters(before=2_000)) == [a.id]
    assert await ids(index, "launch", filters=SearchFilters(after=2_000)) == [c.id]
    assert await ids(index, "launch", filters=SearchFilters(after=1_000, before=3_000)) == [b.id]
    assert await ids(index, "launch", filters=SearchFilters(has_file=True)) == [b.id]
    assert await ids(index, "launch", filters=SearchFilters(sender="bob", channel="general")) == []


async def test_invisible_channels_yield_nothing_even_when_named(index: SearchIndex) -> None:
    public, hidden = doc("quarterly numbers", channel="general"), doc("quarterly numbers", channel="secret")
    await index.index([public, hidden])
    visible = ["general", "random"]
    assert await ids(index, "quarterly", visible=visible) == [public.id]
    assert await ids(index, "quarterly", visible=visible, filters=SearchFilters(channel="secret")) == []
    assert await ids(index, "quarterly", visible=visible, filters=SearchFilters(channel="no-such")) == []
    assert await ids(index, "quarterly", visible=[]) == []
    # Losing a channel takes effect on the next query: nothing is cached per user.
    assert await ids(index, "quarterly", visible=["secret"]) == [hidden.id]
    assert await ids(index, "quarterly", visible=["general"]) == [public.id]


async def test_many_visible_channels(index: SearchIndex) -> None:
    channels = [f"ch-{i}" for i in range(3_000)]
    docs = [doc("needle", channel=channels[i]) for i in range(0, 3_000, 300)]
    await index.index([*docs, doc("needle", channel="secret")])
    assert await ids(index, "needle", visible=channels) == sorted((d.id for d in docs), reverse=True)


# ------------------------------------------------------------------------------ writes


async def test_an_edit_replaces_the_indexed_text(index: SearchIndex) -> None:
    d = doc("meeting on tuesday")
    await index.index([d])
    edited = SearchDoc(id=d.id, channel=d.channel, sender=d.sender, ts=d.ts, seq=d.seq, body="meeting on friday",
                       server=d.server)
    await index.index([edited])
    assert await ids(index, "tuesday") == []
    assert await ids(index, "friday") == [d.id]
    assert await index.count() == 1
    assert await index.list_docs() == [edited]


async def test_the_last_version_in_a_batch_wins(index: SearchIndex) -> None:
    d = doc("first draft")
    second = SearchDoc(id=d.id, channel=d.channel, sender=d.sender, ts=d.ts, seq=d.seq, body="final text")
    await index.index([d, second])
    assert await ids(index, "draft") == []
    assert await ids(index, "final") == [d.id]


async def test_delete_and_delete_channel(index: SearchIndex) -> None:
    a, b = doc("old news"), doc("old news")
    c, d = doc("old news", channel="random"), doc("old news", channel="random")
    await index.index([a, b, c, d])
    await index.delete([a.id, 999_999_999])
    await index.delete([])
    assert await ids(index, "news") == [d.id, c.id, b.id]
    assert await index.delete_channel("random") == 2
    assert await index.delete_channel("random") == 0
    assert await ids(index, "news") == [b.id]
    assert await index.count() == 1


async def test_snippets_mark_matches_and_escape_html(index: SearchIndex) -> None:
    d = doc("<b>bold</b> & friends \ue000forged\ue001 café")
    await index.index([d])
    [hit] = await hits(index, "friends")
    assert "<mark>friends</mark>" in hit.snippet
    # HTML-safe: the only tags are ours (PostgreSQL's headline also drops what looks like a tag).
    text = hit.snippet.replace("<mark>", "").replace("</mark>", "")
    assert "<" not in text
    assert ">" not in text
    assert "bold" in text
    assert "&amp;" in text
    assert "<mark>forged" not in hit.snippet
    assert "\ue000" not in hit.snippet
    [hit] = await hits(index, "cafe")
    assert "<mark>café</mark>" in hit.snippet


async def test_bodies_that_are_not_clean_text_are_indexed(index: SearchIndex) -> None:
    d = doc("nul\x00byte and a lone \ud800 surrogate")
    await index.index([d])
    assert await ids(index, "surrogate") == [d.id]
    assert await ids(index, "byte") == [d.id]


async def test_hits_carry_the_document_fields(index: SearchIndex) -> None:
    d = doc("attached report", channel="random", sender="bob", server="srv9", ts=123_456, has_file=True)
    await index.index([d])
    [hit] = await hits(index, "report")
    assert (hit.id, hit.channel, hit.sender, hit.server, hit.ts, hit.seq, hit.has_file) == (
        d.id, "random", "bob", "srv9", 123_456, d.seq, True)


async def test_a_rebuilt_index_equals_the_live_one(index: SearchIndex, index_url: str, tmp_path: Path) -> None:
    store = {d.id: d for d in (doc(f"message {i} about topic{i % 7}", channel=ALL[i % 3]) for i in range(250))}
    live = list(store.values())
    await index.index(live[:100])
    await index.index(live[100:])
    for victim in live[::10]:
        del store[victim.id]
    await index.delete([d.id for d in live[::10]])
    for edited in live[5::10]:
        store[edited.id] = SearchDoc(id=edited.id, channel=edited.channel, sender=edited.sender, ts=edited.ts,
                                     seq=edited.seq, body="edited " + edited.body, server=edited.server)
    await index.index([store[d.id] for d in live[5::10]])

    rebuilt = await open_index(str(tmp_path / "rebuilt.db"))
    try:
        await rebuilt.index(sorted(store.values(), key=lambda d: d.id))
        assert await index.count() == await rebuilt.count() == len(store)
        assert await all_docs(index) == await all_docs(rebuilt)
        assert await ids(index, "edited topic3") == await ids(rebuilt, "edited topic3") != []
    finally:
        await rebuilt.close()


async def all_docs(index: SearchIndex) -> list[SearchDoc]:
    out: list[SearchDoc] = []
    while batch := await index.list_docs(after_id=out[-1].id if out else -1, limit=64):
        out += batch
    return out


async def test_reopening_keeps_the_index(index_url: str) -> None:
    first = await open_index(index_url)
    d = doc("persistent words")
    await first.index([d])
    await first.close()
    await first.close()
    again = await open_index(index_url)
    try:
        assert await ids(again, "persistent") == [d.id]
    finally:
        await again.close()


async def test_several_openers_of_a_new_index_at_once_all_open_it(index_url: str) -> None:
    """Several workers instances start together (``mqchat up --workers N``): each creates the schema
    if it is missing, and none fails because another created it first."""
    for _ in range(3):
        opened = await asyncio.gather(*(open_index(index_url) for _ in range(4)), return_exceptions=True)
        try:
            assert [o for o in opened if isinstance(o, BaseException)] == []
            d = doc("opened together")
            await opened[0].index([d])  # type: ignore[union-attr]
            assert await ids(opened[-1], "together") == [d.id]  # type: ignore[arg-type]
        finally:
            for o in opened:
                if not isinstance(o, BaseException):
                    await o.close()
        if not index_url.startswith("postgresql://"):
            Path(index_url).unlink()  # a fresh file again: the race is on creating the schema
            for suffix in ("-wal", "-shm"):
                Path(index_url + suffix).unlink(missing_ok=True)
        else:
            break


# ------------------------------------------------------------------------------ paging


async def test_paging_returns_every_hit_once_in_order(index: SearchIndex) -> None:
    # Equal timestamps across pages: the order (ts, id) must still be total.
    docs = [doc(f"standup notes {i}", channel=ALL[i % 3], ts=1_000 + i // 4) for i in range(57)]
    await index.index([*docs, doc("standup notes", channel="secret")])
    for filters in (SearchFilters(), SearchFilters(channel="random")):
        expected = sorted((d for d in docs if filters.channel in (None, d.channel)),
                          key=lambda d: (d.ts, d.id), reverse=True)
        seen: list[int] = []
        cursor = None
        pages = 0
        while True:
            page = await index.search(parse("standup"), visible_channels=ALL[:3], filters=filters, limit=10,
                                      cursor=cursor)
            seen += [h.id for h in page.hits]
            pages += 1
            if page.cursor is None:
                break
            cursor = page.cursor
        assert seen == [d.id for d in expected]
        assert pages == -(-len(expected) // 10)


async def test_a_cursor_is_bound_to_its_query_and_filters(index: SearchIndex) -> None:
    await index.index([doc("alpha beta") for _ in range(5)])
    page = await index.search(parse("alpha"), visible_channels=ALL, limit=2)
    assert page.cursor is not None
    for q, filters in (("beta", SearchFilters()), ("alpha", SearchFilters(channel="general")),
                       ('"alpha"', SearchFilters()), ("alpha*", SearchFilters())):
        with pytest.raises(InvalidSearch) as info:
            await index.search(parse(q), visible_channels=ALL, filters=filters, cursor=page.cursor)
        assert info.value.code == "cursor_mismatch"
    # Visibility is not part of the binding: it is re-checked on every page.
    narrowed = await index.search(parse("alpha"), visible_channels=["random"], cursor=page.cursor)
    assert narrowed.hits == []


@pytest.mark.parametrize("cursor", ["", "garbage", "eyJ4IjogMX0", "WzEsImFiYyIsMSwyXQ", "x" * 1000,
                                    "WzIsImEiLDEsMl0", "WzEsImEiLHRydWUsMl0", "é"])
async def test_a_malformed_cursor_is_refused(index: SearchIndex, cursor: str) -> None:
    with pytest.raises(InvalidSearch) as info:
        await index.search(parse("alpha"), visible_channels=ALL, cursor=cursor)
    assert info.value.code in {"invalid_cursor", "cursor_mismatch"}


@pytest.mark.parametrize("limit", [0, -1, MAX_LIMIT + 1])
async def test_a_bad_limit_is_refused(index: SearchIndex, limit: int) -> None:
    with pytest.raises(InvalidSearch) as info:
        await index.search(parse("alpha"), visible_channels=ALL, limit=limit)
    assert info.value.code == "invalid_limit"


@pytest.mark.parametrize(("q", "code"), [("", "empty_query"), ("   \t\n", "empty_query"), ("*", "empty_query"),
                                         ('"', "empty_query"), ('""', "empty_query"), ("( ) - ^ :", "empty_query"),
                                         ("a" * 1000, "query_too_long"), (" ".join(["w"] * 33), "too_many_terms")])
async def test_bad_queries_raise_the_typed_error(index: SearchIndex, q: str, code: str) -> None:
    await index.index([doc("anything at all")])
    with pytest.raises(InvalidSearch) as info:
        await index.search(parse(q), visible_channels=ALL)
    assert info.value.code == code


async def test_words_with_punctuation_match_as_typed(index: SearchIndex) -> None:
    d = doc("ask o'neil about user_42 and release v1.2.3 today")
    other = doc("user 42 said v1 then 2.3")
    await index.index([d, other])
    for q in ("o'neil", "v1.2.3", "neil", '"release v1.2.3"'):
        assert await ids(index, q) == [d.id], q
    # Punctuation separates tokens: user_42 is "user" then "42", so "user 42" matches it too.
    assert await ids(index, "user_42") == [other.id, d.id]
