"""Opaque page cursors: which listing they belong to and where the next page starts.

A cursor is URL-safe base64 of ``{listing}|{key}|{key}...``; one from another listing, or one that
does not decode, is refused with 422 ``invalid_cursor`` (never a 500, never a silently wrong page).
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

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


#: Page sizes of the listing endpoints (``limit``): default and most.
PAGE_DEFAULT, PAGE_MAX = 100, 500
PageLimit = Annotated[int, Query(ge=1, le=PAGE_MAX, description="Most entries in this page.")]
Cursor = Annotated[str | None, Query(max_length=200, description="`next_cursor` of the previous page.")]
