"""Opaque page cursors: which listing they belong to and where the next page starts.

A cursor is URL-safe base64 of ``{listing}|{key}|{key}...``; one from another listing, or one that
does not decode, is refused with 422 ``invalid_cursor`` (never a 500, never a silently wrong page).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Annotated, TypeVar

from fastapi import Query

from api.errors import ApiError


def encode(listing: str, *keys: str | int) -> str:
    raw = "|".join([listing, *(str(k) for k in keys)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, listing: str) -> list[str]:
    """The keys of a cursor made by :func:`encode` for ``listing``.

    Raises:
        ApiError: 422 ``invalid_cursor``.
    """
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    name, _, rest = text.partition("|")
    if name != listing or not rest:
        raise ApiError(422, "invalid_cursor", "this cursor does not belong to this listing; start from the first page")
    return rest.split("|")


T = TypeVar("T")


def slice_page(items: Sequence[T], key: Callable[[T], tuple[int, str]], *, listing: str, limit: int,
               cursor: str | None) -> tuple[list[T], str | None]:
    """The page of ``items`` (sorted by ``key``: a time and an id) after ``cursor``, and the next cursor
    (None on the last page), for listings read whole from the store and answered a page at a time.

    Raises:
        ApiError: 422 ``invalid_cursor``.
    """
    rest = list(items)
    if cursor:
        keys = decode(cursor, listing)
        if len(keys) != 2 or not keys[0].isdigit():
            raise ApiError(422, "invalid_cursor", "this cursor does not belong to this listing; start from the "
                           "first page")
        start = (int(keys[0]), keys[1])
        rest = [i for i in rest if key(i) > start]
    page = rest[:limit]
    return page, encode(listing, *key(page[-1])) if len(rest) > limit else None


#: Page sizes of the listing endpoints (``limit``): default and most.
PAGE_DEFAULT, PAGE_MAX = 100, 500
PageLimit = Annotated[int, Query(ge=1, le=PAGE_MAX, description="Most entries in this page.")]
Cursor = Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page.")]
