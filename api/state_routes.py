"""Read markers, inbox, sync and channel presence."""

from __future__ import annotations

import asyncio
from typing import Literal

import msgspec
from fastapi import APIRouter

from api import models
from api.deps import Me, Services, Svc, member_channel
from api.errors import ApiError
from mqchat import unread
from mqchat.storage.base import Channel, Position, ReadMarker, StoredMessage

router = APIRouter(prefix="/v1")


def _out(m: StoredMessage) -> models.MessageOut:
    return models.MessageOut(**msgspec.structs.asdict(m.to_wire()))


async def _badge(svc: Services, user_id: str) -> tuple[int, dict[str, Position], dict[str, ReadMarker | None]]:
    channels = list(await svc.directory.channel_ids_of(user_id))
    positions = await svc.store.positions(channels)
    markers = await svc.state.read_markers(user_id, channels)
    return unread.badge(positions, markers), positions, markers


@router.post("/channels/{channel_id}/read", response_model=models.ReadState)
async def mark_read(channel_id: str, body: models.MarkRead, me: Me, svc: Svc) -> models.ReadState:
    """Move your read marker (never backwards); every device of yours gets a ``read`` event."""
    await member_channel(svc, me, channel_id)
    position = (await svc.store.positions([channel_id]))[channel_id]
    epoch = body.epoch or position.epoch
    if epoch == position.epoch and body.seq > position.last_seq:
        raise ApiError(422, "seq_out_of_range", f"seq {body.seq} is beyond the channel's last seq {position.last_seq}")
    marker = await svc.state.mark_read(me.user_id, channel_id, epoch, body.seq)
    badge, _, _ = await _badge(svc, me.user_id)
    seq = unread.read_seq(position, marker)
    mentions = (await svc.state.mention_counts(me.user_id, {channel_id: seq}))[channel_id]
    result = models.ReadState(channel=channel_id, epoch=position.epoch, seq=seq,
                              unread=unread.unread(position, marker), mentions=mentions, badge=badge)
    await svc.events.user_event(me.user_id, {"type": "read", **result.model_dump()})
    return result


@router.get("/me/inbox", response_model=models.Inbox)
async def inbox(me: Me, svc: Svc) -> models.Inbox:
    """Your channels with their last message, unread and mention counts, most recent first."""
    channels: list[Channel] = await svc.directory.channels_of(me.user_id)
    ids = [c.channel_id for c in channels]
    positions = await svc.store.positions(ids)
    markers = await svc.state.read_markers(me.user_id, ids)
    read_seqs = {c: unread.read_seq(positions[c], markers[c]) for c in ids}
    mentions = await svc.state.mention_counts(me.user_id, read_seqs)
    pages = await asyncio.gather(*(svc.store.history(c, limit=1) for c in ids))
    members = await asyncio.gather(*(svc.directory.members(c) for c in ids))
    entries = []
    for channel, page, who in zip(channels, pages, members, strict=True):
        cid = channel.channel_id
        last = page.messages[-1] if page.messages else None
        entries.append(models.InboxEntry(
            channel_id=cid, kind=channel.kind, name=channel.name, members=who, epoch=positions[cid].epoch,
            last_seq=positions[cid].last_seq, read_seq=read_seqs[cid],
            unread=unread.unread(positions[cid], markers[cid]),
            mentions=mentions[cid], last_message=_out(last) if last else None,
            activity_ms=last.ts if last else channel.created_ms,
        ))
    entries.sort(key=lambda e: (e.activity_ms, e.channel_id), reverse=True)
    return models.Inbox(channels=entries, badge=sum(e.unread for e in entries),
                        mentions=sum(e.mentions for e in entries))


@router.post("/sync", response_model=models.SyncResult)
async def sync(body: models.SyncRequest, me: Me, svc: Svc) -> models.SyncResult:
    """Everything a returning device missed, for all its channels, in one call (see docs/sync.md)."""
    mine = await svc.directory.channel_ids_of(me.user_id)
    listed = {c.channel: c for c in body.channels}
    positions = await svc.store.positions(list(mine))

    async def one(channel: str) -> models.SyncChannel:
        pos = positions[channel]
        cursor = listed.get(channel)
        if cursor is not None and cursor.epoch == pos.epoch:
            page = await svc.store.history(channel, after=cursor.last_seq, limit=body.limit)
            status: Literal["ok", "new", "reset"] = "ok"
        else:
            page = await svc.store.history(channel, limit=body.limit)
            status = "new" if cursor is None else "reset"
        return models.SyncChannel(channel=channel, status=status, epoch=page.epoch, last_seq=page.last_seq,
                                  has_more=page.has_more if status == "ok" else False,
                                  messages=[_out(m) for m in page.messages])

    results = await asyncio.gather(*(one(c) for c in sorted(mine)))
    badge, _, _ = await _badge(svc, me.user_id)
    return models.SyncResult(channels=list(results), removed=sorted(set(listed) - mine), badge=badge)


@router.get("/channels/{channel_id}/presence", response_model=models.ChannelPresence)
async def channel_presence(channel_id: str, me: Me, svc: Svc) -> models.ChannelPresence:
    """How many members are online, without listing them (large channels)."""
    await member_channel(svc, me, channel_id)
    return models.ChannelPresence(channel=channel_id, online=await svc.state.online_count(channel_id))
