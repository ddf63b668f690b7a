"""The search index contract: documents in, pages of hits out.

Every backend implements :class:`SearchIndex`; one contract suite (tests/search/) runs over all of
them. What lives here is backend-neutral: the indexed document, the filters, the hit and page
types, the cursor format, the snippet markup and the one error type clients see.

Snippets are HTML-safe text: the message text is HTML-escaped and each matched token is wrapped in
``<mark>`` … ``</mark>``. The engines mark matches with two private-use sentinel characters
(:data:`MARK_START`, :data:`MARK_END`), which are removed from bodies before indexing, so a
message cannot forge a highlight.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import unicodedata
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from mqchat.ids import is_valid_id
from mqchat.search.errors import InvalidSearch
from mqchat.search.query import Query

MARK_START: Final = "\ue000"
"""Private-use character the engines put before a match in a snippet (never indexed)."""
MARK_END: Final = "\ue001"
"""Private-use character the engines put after a match in a snippet (never indexed)."""
ELLIPSIS: Final = "…"
"""Marks text cut from either end of a snippet."""
SNIPPET_TOKENS: Final = 24
"""About how many tokens of context a snippet shows."""

DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 100
"""Most hits one page may ask for."""

FILTER_NAMES: Final = frozenset({"channel", "server", "from", "before", "after", "has"})
"""The filters :meth:`SearchFilters.from_params` accepts; anything else is ``unknown_filter``."""

_CURSOR_VERSION: Final = 1
_MAX_CURSOR_CHARS: Final = 256


@dataclass(frozen=True, slots=True)
class SearchDoc:
    """One message as the index sees it (the latest text wins: indexing is an upsert by ``id``)."""

    id: int
    """The message's Snowflake id."""
    channel: str
    sender: str
    ts: int
    """Milliseconds since the Unix epoch (the message's order time)."""
    seq: int
    body: str
    server: str | None = None
    """The server (guild) the channel belongs to; ``None`` for direct and group channels."""
    has_file: bool = False


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """Narrowing filters; all are ANDed and none can widen what ``visible_channels`` allows."""

    channel: str | None = None
    server: str | None = None
    sender: str | None = None
    """The ``from`` filter (``from`` is a Python keyword)."""
    before: int | None = None
    """Only messages with ``ts < before`` (ms)."""
    after: int | None = None
    """Only messages with ``ts > after`` (ms)."""
    has_file: bool = False
    """``has=file``: only messages with an attachment."""

    def __post_init__(self) -> None:
        for name, value in (("channel", self.channel), ("server", self.server), ("from", self.sender)):
            if value is not None and not is_valid_id(value):
                raise InvalidSearch("invalid_filter", f"{name} must be an id of 1-64 characters from [A-Za-z0-9_-]")
        for name, ms in (("before", self.before), ("after", self.after)):
            if ms is not None and (isinstance(ms, bool) or not isinstance(ms, int) or not 0 <= ms < 1 << 63):
                raise InvalidSearch("invalid_filter", f"{name} must be milliseconds since the Unix epoch")

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> SearchFilters:
        """Filters from HTTP query parameters (``channel``, ``server``, ``from``, ``before``, ``after``, ``has``).

        Raises:
            InvalidSearch: ``unknown_filter`` for any other name, ``invalid_filter`` for a bad value.
        """
        unknown = sorted(set(params) - FILTER_NAMES)
        if unknown:
            known = ", ".join(sorted(FILTER_NAMES))
            raise InvalidSearch("unknown_filter", f"unknown filter {unknown[0]!r}; known: {known}")
        has = params.get("has")
        if has is not None and has != "file":
            raise InvalidSearch("invalid_filter", "has accepts only 'file'")
        return cls(channel=params.get("channel"), server=params.get("server"), sender=params.get("from"),
                   before=_ms(params, "before"), after=_ms(params, "after"), has_file=has == "file")

    def key(self) -> str:
        """A canonical string of these filters (binds a cursor to them)."""
        return json.dumps([self.channel, self.server, self.sender, self.before, self.after, self.has_file])


NO_FILTERS: Final = SearchFilters()


def _ms(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise InvalidSearch("invalid_filter", f"{name} must be milliseconds since the Unix epoch")
    return int(raw)


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One matching message; the API joins it with the stored message for the full payload."""

    id: int
    channel: str
    server: str | None
    sender: str
    ts: int
    seq: int
    has_file: bool
    snippet: str
    """HTML-safe text with ``<mark>``…``</mark>`` around matches (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class SearchPage:
    """Hits newest first (``ts`` then ``id``, both descending); ``cursor`` is ``None`` on the last page."""

    hits: list[SearchHit]
    cursor: str | None


class SearchIndex(Protocol):
    """A full-text index of messages, queried with the caller's visible channels.

    The visibility predicate and every filter are part of the one statement the engine runs: no
    row of a channel outside ``visible_channels`` is ever read into the process.
    """

    async def index(self, docs: Sequence[SearchDoc]) -> None:
        """Insert or replace ``docs`` (by id) in one transaction; an edit re-indexes the new text."""
        ...

    async def delete(self, ids: Collection[int]) -> None:
        """Remove these messages; unknown ids are ignored."""
        ...

    async def delete_channel(self, channel: str) -> int:
        """Remove every message of ``channel`` (the channel was deleted); returns how many."""
        ...

    async def search(self, query: Query, *, visible_channels: Collection[str], filters: SearchFilters = NO_FILTERS,
                     limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> SearchPage:
        """One page of messages matching ``query`` in ``visible_channels`` and ``filters``, newest first.

        Args:
            query: a parsed query (:func:`mqchat.search.query.parse`).
            visible_channels: exactly the channels the caller may see now; a ``channel`` filter
                outside it yields an empty page, never an error.
            filters: narrowing filters.
            limit: 1 to :data:`MAX_LIMIT` hits.
            cursor: the previous page's :attr:`SearchPage.cursor`, for the same query and filters.

        Raises:
            InvalidSearch: ``invalid_limit``, ``invalid_cursor`` or ``cursor_mismatch``.
        """
        ...

    async def count(self) -> int:
        """How many messages are indexed."""
        ...

    async def list_docs(self, *, after_id: int = -1, limit: int = 1000) -> list[SearchDoc]:
        """Indexed documents with ``id > after_id`` in id order (to compare a rebuilt index with a live one)."""
        ...

    async def close(self) -> None:
        """Release connections; idempotent."""
        ...


# ------------------------------------------------------------------------------ shared helpers


def check_limit(limit: int) -> int:
    """``limit`` if it is 1..MAX_LIMIT.

    Raises:
        InvalidSearch: ``invalid_limit``.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidSearch("invalid_limit", f"limit must be 1 to {MAX_LIMIT}")
    return limit


def _binding(query: Query, filters: SearchFilters) -> str:
    return hashlib.sha256(f"{query.key()}\x00{filters.key()}".encode()).hexdigest()[:16]


def encode_cursor(query: Query, filters: SearchFilters, ts: int, msg_id: int) -> str:
    """An opaque cursor: the last hit's position, bound to this query and these filters."""
    raw = json.dumps([_CURSOR_VERSION, _binding(query, filters), ts, msg_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, query: Query, filters: SearchFilters) -> tuple[int, int]:
    """The ``(ts, id)`` after which the next page starts.

    The cursor is not secret (it only holds a position: visibility is checked on every page), but
    it is bound to the query and filters so a client cannot splice pages of two searches.

    Raises:
        InvalidSearch: ``invalid_cursor`` when it is not one of ours, ``cursor_mismatch`` when it
            belongs to another query or other filters.
    """
    try:
        if len(cursor) > _MAX_CURSOR_CHARS:
            raise ValueError("too long")
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        version, binding, ts, msg_id = data
        if version != _CURSOR_VERSION or not isinstance(binding, str):
            raise ValueError("version")
        if not all(isinstance(v, int) and not isinstance(v, bool) and -(1 << 63) <= v < 1 << 63 for v in (ts, msg_id)):
            raise ValueError("position")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidSearch("invalid_cursor", "the cursor is not valid; start the search again") from None
    if binding != _binding(query, filters):
        raise InvalidSearch("cursor_mismatch", "the cursor belongs to another query or other filters")
    return ts, msg_id


def clean_body(body: str) -> str:
    """The text actually indexed: NFKC-normalized, without the snippet sentinels, NUL or lone surrogates.

    NFKC folds compatibility forms (full-width letters, ligatures, composed accents) so that what a
    user types on any keyboard finds the same words; the query parser applies the same fold.
    """
    # Lone surrogates cannot be stored as UTF-8 and NUL is refused by PostgreSQL: neither is text.
    body = body.encode("utf-8", "replace").decode("utf-8").replace("\x00", " ")
    return unicodedata.normalize("NFKC", body).replace(MARK_START, " ").replace(MARK_END, " ")


def render_snippet(raw: str) -> str:
    """HTML-escape an engine snippet and turn its sentinels into ``<mark>`` tags."""
    return html.escape(raw, quote=False).replace(MARK_START, "<mark>").replace(MARK_END, "</mark>")
