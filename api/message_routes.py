"""Rich messages over HTTP: folded state on history, threads, pins, and the REST send.

History keeps returning every event in seq order (clients need gap-free seqs) and adds, on each
message (not on the events that change messages), ``state``: the message's fold
(:mod:`mqchat.fold`) as of the answer, read with one ``MessageStore.related`` call per page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import msgspec
from fastapi import APIRouter, Query, Request

from api import models
from api.deps import Me, Services, Svc, member_channel
from api.errors import ApiError
from mqchat import fold, schema
from mqchat.errors import SchemaError
from mqchat.storage.base import StoredMessage

router = APIRouter(prefix="/v1")


async def with_states(svc: Services, me: str, channel: str,
                      messages: Sequence[StoredMessage]) -> list[schema.HistoryMessage]:
    """``messages`` as history returns them to ``me``: each message with its folded state now, and
    each ``file`` message not deleted with its attachment (fresh signed URLs; ``me`` is a member of
    ``channel``: every caller checked)."""
    seqs = [m.seq for m in messages if m.kind not in schema.TARGETED_KINDS]
    states = fold.fold((await svc.store.related({channel: seqs}))[channel]).messages if seqs else {}
    files = [m.cmid_key for m in messages if m.kind in schema.FILE_KINDS
             and not (m.seq in states and states[m.seq].deleted)]
    attached = await svc.attachments().attachments_for(files) if files and svc.attachments is not None else {}
    out = []
    for m in messages:
        state = states.get(m.seq) if m.kind not in schema.TARGETED_KINDS else None
        fields = msgspec.structs.asdict(m.to_wire())
        fields["attachment"] = attached.get(m.cmid_key)
        out.append(schema.HistoryMessage(**fields, state=state.out(me) if state is not None else None))
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


#: How each error ack of the bridge (and of :func:`mqchat.schema.decode_send`) maps to HTTP.
SEND_STATUS: dict[str, int] = {
    "payload_too_large": 413, "not_member": 403, "forbidden": 403, "not_found": 404, "target_deleted": 409,
    "too_many_reactions": 409, "invalid_thread": 409, "unavailable": 503,
    # a kind "file" send (mqchat.objects.policy.check_file_send)
    "upload_not_found": 404, "upload_not_yours": 403, "upload_incomplete": 409, "upload_expired": 410,
    "upload_used": 409,
}


@router.post("/channels/{channel_id}/messages", response_model=models.SendOut, responses={
    403: {"description": "not_member, forbidden, upload_not_yours"},
    404: {"description": "not_found: the target; upload_not_found"},
    409: {"description": "target_deleted, too_many_reactions, invalid_thread, upload_incomplete, upload_used"},
    410: {"description": "upload_expired"},
    422: {"description": "the payload codes of docs/protocol.md"},
    503: {"description": "unavailable: retry with the same cmid"},
    504: {"description": "ack_timeout: no ack in time; retry with the same cmid"}})
async def send(channel_id: str, request: Request, me: Me, svc: Svc) -> models.SendOut:
    """Send as the token's device: the body is the MQTT send payload (docs/protocol.md), and the
    answer is the bridge's ack. Same bridge path as MQTT: same order, idempotency by ``cmid``
    (a retry answers the original ``id`` and ``seq``) and error codes."""
    raw = await request.body()
    try:
        req = schema.decode_send(raw)  # the bridge's own decoder: same codes, and a cmid to wait on
    except SchemaError as exc:
        raise ApiError(SEND_STATUS.get(exc.code, 422), exc.code, exc.message) from None
    if svc.sends is None:
        raise ApiError(503, "unavailable", "this API instance has no broker connection for sends", retry_after_s=1)
    try:
        ack = await svc.sends.send(me.user_id, me.device_id, channel_id, req.cmid, raw,
                                   svc.settings.http.send_timeout_s)
    except TimeoutError:
        raise ApiError(504, "ack_timeout", "no ack from the bridge in time; retry with the same cmid",
                       retry_after_s=1) from None
    if not ack.ok:
        error = ack.error or schema.ErrorBody("unavailable", "refused without a reason")
        raise ApiError(SEND_STATUS.get(error.code, 422), error.code, error.message,
                       retry_after_s=1 if error.code == "unavailable" else None)
    return models.SendOut(cmid=ack.cmid, channel=ack.channel, ok=True, id=ack.id, seq=ack.seq, epoch=ack.epoch)
