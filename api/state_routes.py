"""Read markers, inbox, sync and channel presence."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Literal

import msgspec
from fastapi import APIRouter

from api import message_routes, models, paging
from api.deps import Me, Services, Svc, embedded_members, member_channel
from api.errors import ApiError
from api.paging import PAGE_DEFAULT, Cursor, PageLimit
from mqchat import schema, unread
from mqchat.storage.base import Channel, CmidKey, HistoryPage, Position, ReadMarker, StoredMessage

router = APIRouter(prefix="/v1")


def _out(m: StoredMessage, attached: Mapping[CmidKey, schema.Attachment]) -> models.MessageOut:
    """The stream payload of ``m``, with its attachment when it is a ``file`` message still there."""
    wire = m.to_wire()
    att = attached.get(m.cmid_key)
    return wire if att is None else msgspec.structs.replace(wire, attachment=att)


async def _counts(svc: Services, positions: dict[str, Position],
                  markers: dict[str, ReadMarker | None]) -> unread.Counts:
    points = unread.points(positions, markers)
    return await svc.store.counts_at(points) if points else {}


async def _badge(svc: Services, user_id: str) -> tuple[int, dict[str, Position], dict[str, ReadMarker | None]]:
    channels = list(await svc.directory.channel_ids_of(user_id))
    positions = await svc.store.positions(channels)
    markers = await svc.state.read_markers(user_id, channels)
    return unread.badge(positions, markers, await _counts(svc, positions, markers)), positions, markers


@router.post("/channels/{channel_id}/read", response_model=models.ReadState)
async def mark_read(channel_id: str, body: models.MarkRead, me: Me, svc: Svc) -> models.ReadState:
    """Move your read marker (never backwards); every device of yours gets a ``read`` event."""
    await member_channel(svc, me, channel_id)
    position = (await svc.store.positions([channel_id]))[channel_id]
    epoch = body.epoch or position.epoch
    if epoch != position.epoch:
        # A marker is only meaningful in the channel's current epoch; storing another would drop the
        # user's read seq to 0 (unread and badges jump) until a marker of that epoch came along.
        raise ApiError(409, "epoch_mismatch", f"the channel is at epoch {position.epoch}, not {epoch}: sync, then "
                       "mark what you read in the current epoch")
    if body.seq > position.last_seq:
        raise ApiError(422, "seq_out_of_range", f"seq {body.seq} is beyond the channel's last seq {position.last_seq}")
    marker = await svc.state.mark_read(me.user_id, channel_id, epoch, body.seq)
    badge, _, _ = await _badge(svc, me.user_id)
    seq = unread.read_seq(position, marker)
    mentions = (await svc.state.mention_counts(me.user_id, {channel_id: seq}))[channel_id]
    counts = await _counts(svc, {channel_id: position}, {channel_id: marker})
    result = models.ReadState(channel=channel_id, epoch=position.epoch, seq=seq,
                              unread=unread.unread(channel_id, position, marker, counts), mentions=mentions,
                              badge=badge)
    await svc.events.user_event(me.user_id, {"type": "read", **result.model_dump()})
    return result


@router.get("/me/inbox", response_model=models.Inbox)
async def inbox(me: Me, svc: Svc, limit: PageLimit = PAGE_DEFAULT, cursor: Cursor = None) -> models.Inbox:
    """Your channels with their last message, unread and mention counts, most recent first, a page
    at a time (``badge`` and ``mentions`` count every channel)."""
    channels: list[Channel] = await svc.directory.channels_of(me.user_id)
    ids = [c.channel_id for c in channels]
    positions = await svc.store.positions(ids)
    markers = await svc.state.read_markers(me.user_id, ids)
    read_seqs = {c: unread.read_seq(positions[c], markers[c]) for c in ids}
    counts = await _counts(svc, positions, markers)
    mentions = await svc.state.mention_counts(me.user_id, read_seqs)
    lasts = dict(zip(ids, await asyncio.gather(*(svc.store.history(c, limit=1) for c in ids)), strict=True))

    def activity(channel: Channel) -> tuple[int, str]:
        page = lasts[channel.channel_id]
        return (page.messages[-1].ts if page.messages else channel.created_ms), channel.channel_id

    ordered = sorted(channels, key=activity, reverse=True)
    if cursor:
        at_ms, at_id = paging.decode(cursor, "inbox")[:2]
        if not at_ms.isdigit():
            raise ApiError(422, "invalid_cursor", "this cursor does not belong to this listing")
        ordered = [c for c in ordered if activity(c) < (int(at_ms), at_id)]
    page, more = ordered[:limit], len(ordered) > limit
    members = await asyncio.gather(*(embedded_members(svc, c.channel_id) for c in page))
    files = [m.cmid_key for c in page for m in lasts[c.channel_id].messages if m.kind in schema.FILE_KINDS]
    attached = await svc.attachments().attachments_for(files) if files and svc.attachments is not None else {}
    entries = []
    for channel, (who, more_members) in zip(page, members, strict=True):
        cid = channel.channel_id
        history = lasts[cid]
        last = history.messages[-1] if history.messages else None
        entries.append(models.InboxEntry(
            channel_id=cid, kind=channel.kind, name=channel.name, members=who, members_next_cursor=more_members,
            epoch=positions[cid].epoch,
            last_seq=positions[cid].last_seq, read_seq=read_seqs[cid],
            unread=unread.unread(cid, positions[cid], markers[cid], counts),
            mentions=mentions[cid], last_message=_out(last, attached) if last else None,
            activity_ms=activity(channel)[0],
        ))
    return models.Inbox(channels=entries, badge=unread.badge(positions, markers, counts),
                        mentions=sum(mentions.values()),
                        next_cursor=paging.encode("inbox", *activity(page[-1])) if more else None)


#: Most messages one sync answer carries, over all channels: a bound on the answer's size whatever
#: the number of channels. Channels left out get ``has_more`` (or an empty latest page) and come in
#: the next call.
SYNC_MAX_MESSAGES = 10_000


@router.post("/sync", response_model=models.SyncResult)
async def sync(body: models.SyncRequest, me: Me, svc: Svc) -> models.SyncResult:
    """Everything a returning device missed, for all its channels, in one call (see docs/sync.md)."""
    mine = await svc.directory.channel_ids_of(me.user_id)
    listed = {c.channel: c for c in body.channels}
    positions = await svc.store.positions(list(mine))

    def plan(channel: str) -> tuple[Literal["ok", "new", "reset"], int]:
        """The channel's status and how many messages it wants in this answer."""
        pos, cursor = positions[channel], listed.get(channel)
        if cursor is None:
            return "new", min(body.limit, pos.last_seq)
        if cursor.epoch != pos.epoch or cursor.last_seq > pos.last_seq:
            # Another epoch, or a position past the channel's end (the device's state is not ours):
            # the device drops what it holds for the channel and starts again from the latest page.
            return "reset", min(body.limit, pos.last_seq)
        return "ok", min(body.limit, pos.last_seq - cursor.last_seq)

    plans = {c: plan(c) for c in mine}
    budget, grants = SYNC_MAX_MESSAGES, {}
    for channel in sorted(mine, key=lambda c: (plans[c][1], c)):  # smallest first: most channels complete
        grants[channel] = min(plans[channel][1], budget)
        budget -= grants[channel]

    async def one(channel: str) -> models.SyncChannel:
        status, wanted = plans[channel]
        granted, pos = grants[channel], positions[channel]
        if granted == 0:
            page = HistoryPage([], pos.epoch, pos.last_seq, has_more=wanted > 0)
        elif status == "ok":
            page = await svc.store.history(channel, after=listed[channel].last_seq, limit=granted)
        else:
            page = await svc.store.history(channel, limit=granted)
        # has_more ("call again with the new last_seq") is for "ok"; new and reset channels carry the
        # latest page, and older messages come from history when the user scrolls back.
        return models.SyncChannel(channel=channel, status=status, epoch=page.epoch, last_seq=page.last_seq,
                                  has_more=status == "ok" and (page.has_more or granted < wanted),
                                  messages=await message_routes.with_states(svc, me.user_id, channel,
                                                                            page.messages))

    results = await asyncio.gather(*(one(c) for c in sorted(mine)))
    badge, _, _ = await _badge(svc, me.user_id)
    return models.SyncResult(channels=list(results), removed=sorted(set(listed) - mine), badge=badge)


@router.get("/channels/{channel_id}/presence", response_model=models.ChannelPresence)
async def channel_presence(channel_id: str, me: Me, svc: Svc) -> models.ChannelPresence:
    """How many members are online, without listing them (large channels)."""
    await member_channel(svc, me, channel_id)
    return models.ChannelPresence(channel=channel_id, online=await svc.state.online_count(channel_id))
