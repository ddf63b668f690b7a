"""Rich messages over HTTP: folded state on history, threads, pins, and the REST send.

History keeps returning every event in seq order (clients need gap-free seqs) and adds, on each
message (not on the events that change messages), ``state``: the message's fold
(:mod:`mqchat.fold`) as of the answer, read with one ``MessageStore.related`` call per page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec
from fastapi import APIRouter, Query

from api import models
from api.deps import Me, Services, Svc, member_channel
from api.errors import ApiError
from mqchat import fold, schema
from mqchat.storage.base import StoredMessage

router = APIRouter(prefix="/v1")


async def with_states(svc: Services, me: str, channel: str,
                      messages: Sequence[StoredMessage]) -> list[schema.HistoryMessage]:
    """``messages`` as history returns them to ``me``: each message with its folded state now."""
    seqs = [m.seq for m in messages if m.kind not in schema.TARGETED_KINDS]
    states = fold.fold((await svc.store.related({channel: seqs}))[channel]).messages if seqs else {}
    out = []
    for m in messages:
        state = states.get(m.seq) if m.kind not in schema.TARGETED_KINDS else None
        out.append(schema.HistoryMessage(**msgspec.structs.asdict(m.to_wire()),
                                         state=state.out(me) if state is not None else None))
    return out


@router.get("/channels/{channel_id}/threads/{root}", response_model=models.ThreadOut,
            responses={404: {"description": "not_found: no such message in this channel"}})
async def thread(
    channel_id: str, root: int, me: Me, svc: Svc,
    after: Annotated[int, Query(ge=0, description="Replies with seq above this.")] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> models.ThreadOut:
    """A thread: its root (with ``reply_count`` and ``last_reply_ts`` in its state) and its replies
    in seq order, a page at a time (next page: ``after`` = the last reply's seq)."""
    await member_channel(svc, me, channel_id)
    replies, more = await svc.store.thread(channel_id, root, after=after, limit=limit)
    related = (await svc.store.related({channel_id: [root]}))[channel_id]
    head = next((m for m in related if m.seq == root), None)
    if head is None or head.kind in schema.TARGETED_KINDS:
        raise ApiError(404, "not_found", f"no message {root} in this channel")
    rows = await with_states(svc, me.user_id, channel_id, [head, *replies])
    return models.ThreadOut(channel=channel_id, root=rows[0], replies=rows[1:], has_more=more)


@router.get("/channels/{channel_id}/pins", response_model=models.PinsOut)
async def pins(channel_id: str, me: Me, svc: Svc) -> models.PinsOut:
    """The channel's pinned messages (the fold of its pin and unpin events), in seq order."""
    await member_channel(svc, me, channel_id)
    events = await svc.store.pin_events(channel_id)
    targets = sorted({e.target for e in events if e.target is not None})
    if not targets:
        return models.PinsOut(channel=channel_id, messages=[])
    related = (await svc.store.related({channel_id: targets}))[channel_id]
    pinned = fold.fold(related).pinned()
    messages = [m for m in related if m.seq in set(pinned)]
    return models.PinsOut(channel=channel_id, messages=await with_states(svc, me.user_id, channel_id, messages))
