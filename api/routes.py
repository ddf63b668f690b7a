"""HTTP routes. Each handler validates, checks membership, and calls the stores."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import APIRouter, Query, Request, Response, status

from api import message_routes, models, paging
from api.deps import Me, Services, Svc, embedded_members, member_channel, member_page, now_ms
from api.errors import ApiError
from api.limits import client_address
from api.paging import PAGE_DEFAULT, Cursor, PageLimit
from mqchat import auth
from mqchat.config import Settings
from mqchat.errors import Conflict
from mqchat.storage.base import Channel

WS_PATH = "/mqtt"


router = APIRouter(prefix="/v1")


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=models.UserCreated,
             responses={409: {"description": "username_taken"}})
async def create_user(body: models.CreateUser, svc: Svc, request: Request) -> models.UserCreated:
    await svc.limits.charge("signup-ip", client_address(request))  # each sign-up costs an Argon2id hash
    hashed = await asyncio.to_thread(svc.hasher.hash, body.password)
    try:
        user = await svc.directory.create_user(body.username, hashed, now_ms=now_ms())
    except Conflict:
        raise ApiError(409, "username_taken", f"username {body.username!r} is taken") from None
    return models.UserCreated(user_id=user.user_id, username=user.username)


@router.post("/login", response_model=models.LoginResult, responses={401: {"description": "bad_credentials"}})
async def login(body: models.Login, svc: Svc, request: Request) -> models.LoginResult:
    if not svc.keys.can_issue:
        raise ApiError(409, "external_issuer", "tokens are issued by the external identity provider")
    await svc.limits.charge("login-ip", client_address(request))
    await svc.limits.charge("login-account", body.username, cost=0)  # refused once its failures are spent
    user = await svc.directory.user_by_name(body.username)
    # An unknown user, and an account with no password (provisioned for an external identity
    # provider), cost one full Argon2id verification too: the answer's timing names no username.
    has_password = user is not None and user.password_hash.startswith("$argon2")
    stored = user.password_hash if user is not None and has_password else svc.dummy_hash
    try:
        ok: bool = await asyncio.to_thread(svc.hasher.verify, stored, body.password)
    except (VerificationError, InvalidHashError):
        ok = False
    if user is None or not has_password or not ok:
        await svc.limits.charge("login-account", body.username)
        raise ApiError(401, "bad_credentials", "unknown username or wrong password")
    pair = await _issue_pair(svc, user.user_id, body.device_id, refresh_token=None)
    m = svc.settings.mqtt
    return models.LoginResult(
        token=pair.token, refresh_token=pair.refresh_token, user_id=user.user_id, device_id=body.device_id,
        expires_at=pair.expires_at,
        mqtt=models.MqttEndpoint(host=m.advertised_host, port=m.port,
                                 ws_url=f"ws://{m.advertised_host}:{m.ws_port}{WS_PATH}",
                                 presence_refresh_ms=presence_refresh_ms(svc.settings)),
    )


def presence_refresh_ms(settings: Settings) -> int | None:
    """How often a device re-publishes its status: a third of the presence lease with an external
    broker (the workers' ingester keeps the lease from those heartbeats), None with the embedded one."""
    return settings.broker.presence_lease_ms // 3 if settings.mqtt.broker == "external" else None


async def _issue_pair(svc: Services, user_id: str, device_id: str, *, refresh_token: str | None) -> models.TokenPair:
    """An access token, and a refresh token: a new family (login) or the rotated one given."""
    if refresh_token is None:
        refresh_token = await svc.tokens.issue(user_id, device_id)
    issued = time.time()
    now = int(issued)
    token = auth.issue(svc.keys, user_id=user_id, device_id=device_id, now=now, issued_at=issued)
    return models.TokenPair(token=token, refresh_token=refresh_token, user_id=user_id, device_id=device_id,
                            expires_at=now + svc.keys.ttl_s)


@router.post("/token/refresh", response_model=models.TokenPair,
             responses={401: {"description": "refresh_invalid, refresh_reused"}, 429: {"description": "rate_limited"}})
async def refresh(body: models.RefreshRequest, svc: Svc, request: Request) -> models.TokenPair:
    """Exchange a refresh token for a new access token and a new refresh token (rotation: the one
    presented is spent). Presenting a spent one again ends that login and disconnects its device."""
    if not svc.keys.can_issue:
        raise ApiError(409, "external_issuer", "tokens are issued by the external identity provider")
    await svc.limits.charge("refresh-ip", client_address(request))
    rotation = await svc.tokens.rotate(body.refresh_token)
    if rotation.outcome == "reused":
        raise ApiError(401, "refresh_reused", "this refresh token was already used: the login is ended on "
                       "this device (log in again)")
    if rotation.outcome != "ok":
        raise ApiError(401, "refresh_invalid", "unknown, expired or revoked refresh token (log in again)")
    return await _issue_pair(svc, rotation.user_id, rotation.device_id, refresh_token=rotation.token)


@router.post("/logout", response_model=models.LoggedOut)
async def logout(me: Me, svc: Svc) -> models.LoggedOut:
    """End this device's login: its refresh tokens are revoked, and its access tokens (HTTP and
    MQTT; the broker closes its connections within seconds)."""
    ended = await svc.tokens.logout(me.user_id, me.device_id)
    return models.LoggedOut(devices="this", sessions_ended=ended)


@router.post("/logout/all", response_model=models.LoggedOut)
async def logout_all(me: Me, svc: Svc) -> models.LoggedOut:
    """End the logins of every device of the caller (a lost phone): the same as ``/logout`` on each."""
    ended = await svc.tokens.logout(me.user_id, None)
    return models.LoggedOut(devices="all", sessions_ended=ended)


async def _channel_out(svc: Services, channel: Channel) -> models.ChannelOut:
    members, more = await embedded_members(svc, channel.channel_id)
    return models.ChannelOut(
        channel_id=channel.channel_id, kind=channel.kind, name=channel.name, created_by=channel.created_by,
        created_ms=channel.created_ms, members=members, members_next_cursor=more,
    )


@router.post("/channels", response_model=models.CreatedChannel, status_code=status.HTTP_201_CREATED,
             responses={200: {"description": "the existing direct channel"}, 422: {"description": "unknown_users"}})
async def create_channel(body: models.CreateChannel, me: Me, svc: Svc, response: Response) -> models.CreatedChannel:
    others = list(dict.fromkeys(u for u in body.members if u != me.user_id))
    if body.kind == "direct" and not others:
        raise ApiError(422, "invalid_request", "a direct channel needs another user")
    missing = set(others) - await svc.directory.existing_users(others)
    if missing:
        raise ApiError(422, "unknown_users", f"no such users: {', '.join(sorted(missing))}")
    channel, created = await svc.directory.create_channel(
        body.kind, body.name, me.user_id, others, now_ms=now_ms())
    if not created:
        response.status_code = status.HTTP_200_OK
    else:
        for user in [me.user_id, *others]:
            await _joined(svc, channel.channel_id, user, by=me.user_id)
    out = await _channel_out(svc, channel)
    return models.CreatedChannel(**out.model_dump(), created=created)


@router.post("/channels/{channel_id}/members", response_model=models.Membership)
async def add_member(channel_id: str, body: models.AddMember, me: Me, svc: Svc) -> models.Membership:
    channel = await member_channel(svc, me, channel_id)
    if channel.kind == "direct":
        raise ApiError(409, "direct_channel", "a direct channel's members cannot change")
    if not await svc.directory.existing_users([body.user_id]):
        raise ApiError(422, "unknown_users", f"no such user: {body.user_id}")
    # A server channel refuses (409 server_channel): people join a server, or see a private
    # channel, only through an invite they accept (docs/permissions.md, "Consent").
    changed = await svc.directory.add_member(channel_id, body.user_id, now_ms=now_ms())
    if changed:
        await _joined(svc, channel_id, body.user_id, by=me.user_id)
    return models.Membership(channel_id=channel_id, user_id=body.user_id, changed=changed)


@router.get("/channels/{channel_id}/members", response_model=models.ChannelMembers)
async def channel_members(channel_id: str, me: Me, svc: Svc, limit: PageLimit = PAGE_DEFAULT,
                          cursor: Cursor = None) -> models.ChannelMembers:
    """The channel's members by user id, a page at a time (a server channel's: the server members who
    can see it; such a page may be short, even empty, while ``next_cursor`` is set)."""
    await member_channel(svc, me, channel_id)
    members, nxt = await member_page(svc, channel_id, limit=limit, cursor=cursor)
    return models.ChannelMembers(channel_id=channel_id, members=members, next_cursor=nxt)


@router.delete("/channels/{channel_id}/members/{user_id}", response_model=models.Membership)
async def remove_member(channel_id: str, user_id: str, me: Me, svc: Svc) -> models.Membership:
    channel = await member_channel(svc, me, channel_id)
    if channel.kind == "direct":
        raise ApiError(409, "direct_channel", "a direct channel's members cannot change")
    # A server channel's members follow the server: the directory answers 409 server_channel.
    if channel.kind == "group" and user_id != me.user_id and channel.created_by != me.user_id:
        raise ApiError(403, "forbidden", "only the channel's creator can remove other members")
    changed = await svc.directory.remove_member(channel_id, user_id)
    if changed:
        await svc.state.set_online(user_id, [channel_id], False)
        await svc.events.user_event(user_id, {"type": "membership", "channel": channel_id, "action": "removed",
                                              "by": me.user_id})
    return models.Membership(channel_id=channel_id, user_id=user_id, changed=changed)


async def _joined(svc: Services, channel_id: str, user_id: str, *, by: str) -> None:
    """A user became a member: history before now counts as read, online counts include them,
    and each of their devices hears about it."""
    position = (await svc.store.positions([channel_id]))[channel_id]
    await svc.state.mark_read(user_id, channel_id, position.epoch, position.last_seq)
    if (await svc.state.presence_of([user_id]))[user_id].status != "offline":
        await svc.state.set_online(user_id, [channel_id], True)
    await svc.events.user_event(user_id, {"type": "membership", "channel": channel_id, "action": "added", "by": by})


@router.get("/me/channels", response_model=models.ChannelList)
async def my_channels(me: Me, svc: Svc, limit: PageLimit = PAGE_DEFAULT, cursor: Cursor = None) -> models.ChannelList:
    """Your channels by channel id, a page at a time."""
    after = paging.decode(cursor, "me/channels")[0] if cursor else ""
    channels = sorted((c for c in await svc.directory.channels_of(me.user_id) if c.channel_id > after),
                      key=lambda c: c.channel_id)
    page = channels[:limit]
    more = len(channels) > limit
    return models.ChannelList(channels=[await _channel_out(svc, c) for c in page],
                              next_cursor=paging.encode("me/channels", page[-1].channel_id) if more else None)


@router.get("/channels/{channel_id}/messages", response_model=models.HistoryOut)
async def history(
    channel_id: str, me: Me, svc: Svc,
    before: Annotated[int | None, Query(ge=1, description="Messages with seq below this.")] = None,
    after: Annotated[int | None, Query(ge=0, description="Messages with seq above this.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> models.HistoryOut:
    await member_channel(svc, me, channel_id)
    """Every event in seq order (gap-free); each message carries its folded ``state`` now."""
    page = await svc.store.history(channel_id, before=before, after=after, limit=limit)
    return models.HistoryOut(
        channel=channel_id, epoch=page.epoch, last_seq=page.last_seq, has_more=page.has_more,
        messages=await message_routes.with_states(svc, me.user_id, channel_id, page.messages),
    )
