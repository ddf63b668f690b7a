"""Message search: an index of message text queried with the caller's visible channels.

::

    message store ──(reindex)──┐
                               ▼
    message log (new/edit/delete) ──▶ indexer ──index()/delete()──▶ SearchIndex ◀──search()── GET /v1/search
                                                                      │
                                                  SQLite FTS5 (embedded) | PostgreSQL tsvector + GIN

The functions that define policy:

- :func:`mqchat.search.query.parse`: what a query means (terms, limits, what is plain text);
- :func:`mqchat.search.sqlite.compile_match` and :func:`mqchat.search.postgres.compile_tsquery`:
  how a parsed query becomes engine syntax, from quoted or parameterized pieces only;
- :meth:`SearchIndex.search`: visibility is the caller's exact channel set, a predicate of the
  engine's statement, so a channel left is a channel no longer searched, at once.

There is no in-memory backend: a faithful one would re-implement the tokenizers, prefix and
phrase rules of two engines and drift from both; an SQLite index in a temporary file is as cheap
for unit tests and is the real thing. docs/search.md is the user-facing reference.
"""

from mqchat.search.base import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    NO_FILTERS,
    SearchDoc,
    SearchFilters,
    SearchHit,
    SearchIndex,
    SearchPage,
)
from mqchat.search.errors import InvalidSearch, SearchError
from mqchat.search.factory import open_search_index
from mqchat.search.query import MAX_QUERY_CHARS, MAX_TERMS, Query, Term, TermKind, parse

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_QUERY_CHARS",
    "MAX_TERMS",
    "NO_FILTERS",
    "InvalidSearch",
    "Query",
    "SearchDoc",
    "SearchError",
    "SearchFilters",
    "SearchHit",
    "SearchIndex",
    "SearchPage",
    "Term",
    "TermKind",
    "open_search_index",
    "parse",
]
