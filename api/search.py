"""``GET /v1/search``: message search, only in the channels the caller can see now (docs/search.md).

The caller's visible channels are read from the directory on every request (every page) and passed
to the index, whose statement holds the visibility predicate; a ``channel`` filter the caller cannot
see yields an empty page, never a 403. Every :class:`~mqchat.search.errors.InvalidSearch` is a 400
with its stable code. Hits are joined with the message store, so each carries the message exactly as
history returns it; a hit whose message the store no longer has (deleted, not yet unindexed) is left
out of the page.

The index is opened on the first search and closed with the process (:func:`close_index`).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request
from pydantic import BaseModel, Field

from api import message_routes, models
from api.deps import Me, Services, Svc
from api.errors import ApiError
from mqchat import schema
from mqchat.search import DEFAULT_LIMIT, InvalidSearch, SearchFilters, SearchIndex, open_search_index, parse
from mqchat.search.base import check_limit
from mqchat.search.feed import MessageRef, fetch_messages
from mqchat.storage.base import StoredMessage

router = APIRouter(prefix="/v1")

#: Parameters of the endpoint itself; every other one is a filter (or ``unknown_filter``).
OWN_PARAMS = frozenset({"q", "limit", "cursor"})


class SearchHitOut(BaseModel):
    message: models.HistoryMessageOut
    """The message as ``GET /v1/channels/{id}/messages`` returns it (with its folded ``state``)."""
    server: str | None = Field(description="The channel's server; null for direct and group channels.")
    has_file: bool
    snippet: str = Field(description="HTML-escaped text around the matches, each in <mark>…</mark>.")


class SearchOut(BaseModel):
    hits: list[SearchHitOut]
    next_cursor: str | None = Field(description="Pass back with the same q and filters for the next page.")


_lock = asyncio.Lock()


async def search_index(app: FastAPI, svc: Services) -> SearchIndex:
    """The process's index, opened on first use."""
    index: SearchIndex | None = getattr(app.state, "search_index", None)
    if index is None:
        async with _lock:
            index = getattr(app.state, "search_index", None)
            if index is None:
                settings = svc.settings
                index = await open_search_index(settings.search.index_url(settings.data_dir),
                                                 language=settings.search.language)
                app.state.search_index = index
    return index


async def close_index(app: FastAPI) -> None:
    """Close the index if a search opened it (at process exit)."""
    index: SearchIndex | None = getattr(app.state, "search_index", None)
    if index is not None:
        app.state.search_index = None
        await index.close()


def _bad(exc: InvalidSearch) -> ApiError:
    return ApiError(400, exc.code, exc.message)


@router.get("/search", response_model=SearchOut,
            responses={400: {"description": "empty_query, query_too_long, too_many_terms, unknown_filter, "
                                            "invalid_filter, invalid_limit, invalid_cursor, cursor_mismatch"},
                       429: {"description": "rate_limited"}})
async def search(
    request: Request, me: Me, svc: Svc,
    q: Annotated[str, Query(max_length=4096, description="Words, \"quoted phrases\", prefixes (hel*).")],
    limit: Annotated[int, Query(description="Hits per page, 1-100.")] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=1024, description="next_cursor of the previous page.")] = None,
    channel: Annotated[str | None, Query(description="Only this channel.")] = None,
    server: Annotated[str | None, Query(description="Only channels of this server.")] = None,
    from_: Annotated[str | None, Query(alias="from", description="Only messages of this user.")] = None,
    before: Annotated[str | None, Query(description="Only messages with ts below this (ms).")] = None,
    after: Annotated[str | None, Query(description="Only messages with ts above this (ms).")] = None,
    has: Annotated[str | None, Query(description="`file`: only messages with an attachment.")] = None,
) -> SearchOut:
    if not svc.settings.search.enabled:
        raise ApiError(404, "search_disabled", "search is turned off on this server")
    await svc.limits.charge("search-user", me.user_id)
    params = request.query_params
    repeated = sorted({k for k in params if len(params.getlist(k)) > 1})
    if repeated:
        raise ApiError(400, "invalid_filter", f"parameter {repeated[0]!r} given more than once")
    try:
        query = parse(q)
        filters = SearchFilters.from_params({k: v for k, v in params.items() if k not in OWN_PARAMS})
        check_limit(limit)
    except InvalidSearch as exc:
        raise _bad(exc) from None
    visible = await svc.directory.channel_ids_of(me.user_id)
    index = await search_index(request.app, svc)
    try:
        page = await index.search(query, visible_channels=visible, filters=filters, limit=limit, cursor=cursor)
    except InvalidSearch as exc:
        raise _bad(exc) from None
    stored = await fetch_messages(svc.store, [MessageRef(h.id, h.channel, h.seq) for h in page.hits])
    by_channel: dict[str, list[StoredMessage]] = {}
    for m in stored.values():
        by_channel.setdefault(m.channel, []).append(m)
    shaped: dict[int, schema.HistoryMessage] = {}
    for channel, found in by_channel.items():
        for out in await message_routes.with_states(svc, me.user_id, channel, found):
            shaped[int(out.id)] = out
    hits = [SearchHitOut(message=shaped[h.id], server=h.server, has_file=h.has_file, snippet=h.snippet)
            for h in page.hits if h.id in shaped]
    return SearchOut(hits=hits, next_cursor=page.cursor)
