"""Servers, roles, server channels and their overwrites, invites, moderation and the audit log.

Every write goes to :class:`~mqchat.storage.base.ServerDirectory`, which checks the caller's
permissions in the same transaction and raises a typed error; :func:`api.errors.directory_error`
turns it into the HTTP answer (404 when the caller may not see the object, 403 ``forbidden`` naming
the missing permission when they may see it but not act). Reads check visibility here: a server is
visible to its members (and, when discoverable, its summary to everyone signed in); a channel to
those holding ``view_channel`` in it. docs/http.md lists the endpoints, docs/permissions.md the rules.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api import paging
from api.deps import Me, Services, Svc, now_ms
from api.errors import ApiError
from api.paging import PAGE_DEFAULT, Cursor, PageLimit
from mqchat import permissions as P
from mqchat.auth import Principal
from mqchat.permissions import NONE, Permission
from mqchat.storage.base import AuditEntry, Ban, Channel, ChannelOverwrite, Invite, Member, Role, Server

router = APIRouter(prefix="/v1")

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
PermNames = Annotated[list[Annotated[str, StringConstraints(max_length=64)]], Field(max_length=64)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- bodies and answers ----------------------------------------------------------------------------


class CreateServer(_Strict):
    name: Name
    discoverable: bool = False


class EditServer(_Strict):
    name: Name | None = None
    discoverable: bool | None = None


class ServerOut(BaseModel):
    server_id: str
    name: str
    owner_id: str
    discoverable: bool
    created_ms: int


class ServerList(BaseModel):
    servers: list[ServerOut]
    next_cursor: str | None = None


class MemberOut(BaseModel):
    user_id: str
    username: str
    display_name: str | None
    joined_ms: int
    role_ids: list[str]
    timeout_until_ms: int | None


class MemberList(BaseModel):
    members: list[MemberOut]
    next_cursor: str | None


class Joined(BaseModel):
    server: ServerOut
    joined: bool = Field(description="False when you were already a member.")


class Transfer(_Strict):
    user_id: str


class CreateRole(_Strict):
    name: Name
    permissions: PermNames = Field(default_factory=list)
    position: int = Field(1, ge=1, le=10_000)


class EditRole(_Strict):
    name: Name | None = None
    permissions: PermNames | None = None
    position: int | None = Field(None, ge=0, le=10_000)


class RoleOut(BaseModel):
    role_id: str
    name: str
    position: int
    permissions: list[str]
    everyone: bool


class RoleList(BaseModel):
    roles: list[RoleOut]


class Changed(BaseModel):
    changed: bool


class CreateServerChannel(_Strict):
    name: Name
    private: bool = False
    slow_mode_s: int = Field(0, ge=0, le=6 * 3600)


class EditServerChannel(_Strict):
    name: Name | None = None
    slow_mode_s: int | None = Field(None, ge=0, le=6 * 3600)


class ServerChannelOut(BaseModel):
    channel_id: str
    server_id: str
    name: str | None
    created_by: str
    created_ms: int
    slow_mode_s: int


class ServerChannelList(BaseModel):
    channels: list[ServerChannelOut]


class OverwriteBody(_Strict):
    allow: PermNames = Field(default_factory=list)
    deny: PermNames = Field(default_factory=list)


class OverwriteOut(BaseModel):
    channel_id: str
    target: Literal["role", "member"]
    target_id: str
    allow: list[str]
    deny: list[str]


class OverwriteList(BaseModel):
    overwrites: list[OverwriteOut]


class MyPermissions(BaseModel):
    channel_id: str
    server_id: str | None
    permissions: list[str]
    timeout_until_ms: int | None
    slow_mode_s: int


class CreateInvite(_Strict):
    max_uses: int | None = Field(None, ge=1, le=100_000)
    expires_in_s: int | None = Field(None, ge=1, le=365 * 24 * 3600)
    channel_id: str | None = None


class InviteOut(BaseModel):
    code: str
    server_id: str
    channel_id: str | None
    creator: str
    max_uses: int | None
    uses: int
    expires_ms: int | None
    revoked: bool
    created_ms: int


class InviteList(BaseModel):
    invites: list[InviteOut]
    next_cursor: str | None = None


class InvitePreview(BaseModel):
    """What an invite shows before it is accepted: the server's name, never its members."""

    code: str
    server_id: str
    server_name: str
    channel_id: str | None
    channel_name: str | None
    expires_ms: int | None
    usable: bool
    reason: Literal["invite_revoked", "invite_expired", "invite_used_up"] | None


class BanBody(_Strict):
    reason: Annotated[str, StringConstraints(max_length=512)] | None = None


class BanOut(BaseModel):
    server_id: str
    user_id: str
    actor: str
    reason: str | None
    created_ms: int


class BanList(BaseModel):
    bans: list[BanOut]
    next_cursor: str | None = None


class TimeoutBody(_Strict):
    until_ms: int = Field(ge=0, description="Milliseconds since the Unix epoch; at most 28 days ahead.")


class AuditOut(BaseModel):
    entry_id: int
    actor: str
    action: str
    target: str | None
    details: dict[str, Any]
    created_ms: int


class AuditList(BaseModel):
    entries: list[AuditOut]
    next_cursor: str | None


# --- conversions -----------------------------------------------------------------------------------


def _server(s: Server) -> ServerOut:
    return ServerOut(server_id=s.server_id, name=s.name, owner_id=s.owner_id, discoverable=s.discoverable,
                     created_ms=s.created_ms)


def _member(m: Member) -> MemberOut:
    return MemberOut(user_id=m.user_id, username=m.username, display_name=m.display_name, joined_ms=m.joined_ms,
                     role_ids=list(m.role_ids), timeout_until_ms=m.timeout_until_ms)


def _role(r: Role) -> RoleOut:
    return RoleOut(role_id=r.role_id, name=r.name, position=r.position, permissions=P.names(r.perms),
                   everyone=r.is_everyone)


def _channel(c: Channel) -> ServerChannelOut:
    assert c.server_id is not None
    return ServerChannelOut(channel_id=c.channel_id, server_id=c.server_id, name=c.name, created_by=c.created_by,
                            created_ms=c.created_ms, slow_mode_s=c.slow_mode_s)


def _overwrite(o: ChannelOverwrite) -> OverwriteOut:
    return OverwriteOut(channel_id=o.channel_id, target=o.target, target_id=o.target_id, allow=P.names(o.allow),
                        deny=P.names(o.deny))


def _invite(i: Invite) -> InviteOut:
    return InviteOut(code=i.code, server_id=i.server_id, channel_id=i.channel_id, creator=i.creator,
                     max_uses=i.max_uses, uses=i.uses, expires_ms=i.expires_ms, revoked=i.revoked,
                     created_ms=i.created_ms)


def _ban(b: Ban) -> BanOut:
    return BanOut(server_id=b.server_id, user_id=b.user_id, actor=b.actor, reason=b.reason, created_ms=b.created_ms)


def _audit(e: AuditEntry) -> AuditOut:
    return AuditOut(entry_id=e.entry_id, actor=e.actor, action=e.action, target=e.target, details=dict(e.details),
                    created_ms=e.created_ms)


# --- visibility ------------------------------------------------------------------------------------


def _server_not_found(server_id: str) -> ApiError:
    return ApiError(404, "server_not_found", f"no such server {server_id!r}, or you may not see it")


async def _member_of(svc: Services, me: Principal, server_id: str) -> tuple[Server, Permission]:
    """The server and the caller's server-level permissions, if they are a member (else 404)."""
    server = await svc.directory.get_server(server_id)
    if server is None or await svc.directory.member(server_id, me.user_id) is None:
        raise _server_not_found(server_id)
    return server, await svc.directory.server_permissions(server_id, me.user_id)


def _require(perms: Permission, needed: Permission) -> None:
    if needed not in perms and Permission.ADMINISTRATOR not in perms:
        name = P.names(needed)[0]
        raise ApiError(403, "forbidden", f"missing permission {name}", missing=name)


async def _channel_perms(svc: Services, me: Principal, channel_id: str) -> tuple[Channel, Permission]:
    """The channel and the caller's effective permissions in it; 404 when they cannot see it."""
    channel = await svc.directory.get_channel(channel_id)
    perms = (await svc.directory.channel_access([(channel_id, me.user_id)]))[(channel_id, me.user_id)].perms \
        if channel is not None else NONE
    if channel is None or Permission.VIEW_CHANNEL not in perms:
        raise ApiError(404, "channel_not_found", "no such channel, or you are not a member")
    return channel, perms


async def _server_event(svc: Services, user_id: str, server_id: str, action: str, *, by: str,
                        reason: str | None = None) -> None:
    """Tell each device of ``user_id`` that they joined or left a server (refresh its channels)."""
    event: dict[str, Any] = {"type": "server", "server": server_id, "action": action, "by": by}
    if reason is not None:
        event["reason"] = reason
    await svc.events.user_event(user_id, event)


def _perms(names: list[str]) -> Permission:
    return P.parse(names)  # UnknownPermission -> 422 unknown_permission


# --- servers ---------------------------------------------------------------------------------------


@router.post("/servers", response_model=ServerOut, status_code=status.HTTP_201_CREATED)
async def create_server(body: CreateServer, me: Me, svc: Svc) -> ServerOut:
    return _server(await svc.directory.create_server(me.user_id, body.name, discoverable=body.discoverable,
                                                     now_ms=now_ms()))


@router.get("/servers", response_model=ServerList)
async def discoverable_servers(
    _me: Me, svc: Svc,
    discoverable: Annotated[bool, Query(description="Only `true` is supported: servers anyone may join.")] = True,
    limit: PageLimit = PAGE_DEFAULT, cursor: Cursor = None,
) -> ServerList:
    if not discoverable:
        raise ApiError(422, "invalid_request", "only discoverable servers are listed; yours are at /v1/me/servers")
    after = paging.decode(cursor, "servers")[0] if cursor else None
    found = await svc.directory.discoverable_servers(after=after, limit=limit + 1)
    page = found[:limit]
    more = len(found) > limit
    return ServerList(servers=[_server(s) for s in page],
                      next_cursor=paging.encode("servers", page[-1].server_id) if more else None)


@router.get("/me/servers", response_model=ServerList)
async def my_servers(me: Me, svc: Svc, limit: PageLimit = PAGE_DEFAULT, cursor: Cursor = None) -> ServerList:
    """Your servers, oldest first, a page at a time."""
    page, nxt = paging.slice_page(await svc.directory.servers_of(me.user_id), lambda s: (s.created_ms, s.server_id),
                                  listing="me/servers", limit=limit, cursor=cursor)
    return ServerList(servers=[_server(s) for s in page], next_cursor=nxt)


@router.get("/servers/{server_id}", response_model=ServerOut)
async def get_server(server_id: str, me: Me, svc: Svc) -> ServerOut:
    server = await svc.directory.get_server(server_id)
    if server is None or (not server.discoverable and await svc.directory.member(server_id, me.user_id) is None):
        raise _server_not_found(server_id)
    return _server(server)


@router.patch("/servers/{server_id}", response_model=ServerOut)
async def edit_server(server_id: str, body: EditServer, me: Me, svc: Svc) -> ServerOut:
    server, perms = await _member_of(svc, me, server_id)
    if body.name is not None or body.discoverable is not None:
        _require(perms, Permission.MANAGE_SERVER)  # both or neither: no half-applied edit
    if body.name is not None:
        server = await svc.directory.rename_server(me.user_id, server_id, body.name, now_ms=now_ms())
    if body.discoverable is not None:
        server = await svc.directory.set_discoverable(me.user_id, server_id, body.discoverable, now_ms=now_ms())
    return _server(server)


@router.delete("/servers/{server_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_server(server_id: str, me: Me, svc: Svc) -> Response:
    await svc.directory.delete_server(me.user_id, server_id, now_ms=now_ms())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/servers/{server_id}/members", response_model=MemberList)
async def server_members(server_id: str, me: Me, svc: Svc, limit: PageLimit = PAGE_DEFAULT,
                         cursor: Cursor = None) -> MemberList:
    """Members by user id, with their display names."""
    await _member_of(svc, me, server_id)
    after = paging.decode(cursor, f"members/{server_id}")[0] if cursor else None
    page = await svc.directory.server_members(server_id, after=after, limit=limit)
    return MemberList(members=[_member(m) for m in page.members],
                      next_cursor=paging.encode(f"members/{server_id}", page.next_after) if page.next_after else None)


@router.post("/servers/{server_id}/join", response_model=Joined)
async def join_server(server_id: str, me: Me, svc: Svc) -> Joined:
    """Discoverable servers only; the others are joined by invite."""
    joined = await svc.directory.join_server(me.user_id, server_id, now_ms=now_ms())
    server = await svc.directory.get_server(server_id)
    if server is None:
        raise _server_not_found(server_id)
    if joined:
        await _server_event(svc, me.user_id, server_id, "joined", by=me.user_id)
    return Joined(server=_server(server), joined=joined)


@router.post("/servers/{server_id}/leave", status_code=status.HTTP_204_NO_CONTENT)
async def leave_server(server_id: str, me: Me, svc: Svc) -> Response:
    await _member_of(svc, me, server_id)
    await svc.directory.leave_server(me.user_id, server_id, now_ms=now_ms())
    await _server_event(svc, me.user_id, server_id, "left", by=me.user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/servers/{server_id}/transfer", response_model=ServerOut)
async def transfer(server_id: str, body: Transfer, me: Me, svc: Svc) -> ServerOut:
    return _server(await svc.directory.transfer_ownership(me.user_id, server_id, body.user_id, now_ms=now_ms()))


# --- roles -----------------------------------------------------------------------------------------


@router.get("/servers/{server_id}/roles", response_model=RoleList)
async def list_roles(server_id: str, me: Me, svc: Svc) -> RoleList:
    """Highest position first; ``@everyone`` (id = the server id) last."""
    await _member_of(svc, me, server_id)
    return RoleList(roles=[_role(r) for r in await svc.directory.roles(server_id)])


@router.post("/servers/{server_id}/roles", response_model=RoleOut, status_code=status.HTTP_201_CREATED)
async def create_role(server_id: str, body: CreateRole, me: Me, svc: Svc) -> RoleOut:
    return _role(await svc.directory.create_role(me.user_id, server_id, body.name, _perms(body.permissions),
                                                 position=body.position, now_ms=now_ms()))


@router.patch("/servers/{server_id}/roles/{role_id}", response_model=RoleOut)
async def edit_role(server_id: str, role_id: str, body: EditRole, me: Me, svc: Svc) -> RoleOut:
    perms = _perms(body.permissions) if body.permissions is not None else None
    return _role(await svc.directory.edit_role(me.user_id, server_id, role_id, name=body.name, perms=perms,
                                               position=body.position, now_ms=now_ms()))


@router.delete("/servers/{server_id}/roles/{role_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_role(server_id: str, role_id: str, me: Me, svc: Svc) -> Response:
    await svc.directory.delete_role(me.user_id, server_id, role_id, now_ms=now_ms())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.put("/servers/{server_id}/members/{user_id}/roles/{role_id}", response_model=Changed)
async def add_member_role(server_id: str, user_id: str, role_id: str, me: Me, svc: Svc) -> Changed:
    return Changed(changed=await svc.directory.add_member_role(me.user_id, server_id, user_id, role_id,
                                                               now_ms=now_ms()))


@router.delete("/servers/{server_id}/members/{user_id}/roles/{role_id}", response_model=Changed)
async def remove_member_role(server_id: str, user_id: str, role_id: str, me: Me, svc: Svc) -> Changed:
    return Changed(changed=await svc.directory.remove_member_role(me.user_id, server_id, user_id, role_id,
                                                                  now_ms=now_ms()))


# --- server channels and overwrites ----------------------------------------------------------------


@router.get("/servers/{server_id}/channels", response_model=ServerChannelList)
async def list_channels(server_id: str, me: Me, svc: Svc) -> ServerChannelList:
    """The server's channels the caller can see."""
    await _member_of(svc, me, server_id)
    channels = await svc.directory.server_channels(server_id)
    access = await svc.directory.channel_access([(c.channel_id, me.user_id) for c in channels])
    return ServerChannelList(channels=[_channel(c) for c in channels
                                       if Permission.VIEW_CHANNEL in access[(c.channel_id, me.user_id)].perms])


@router.post("/servers/{server_id}/channels", response_model=ServerChannelOut, status_code=status.HTTP_201_CREATED)
async def create_channel(server_id: str, body: CreateServerChannel, me: Me, svc: Svc) -> ServerChannelOut:
    return _channel(await svc.directory.create_server_channel(me.user_id, server_id, body.name, private=body.private,
                                                              slow_mode_s=body.slow_mode_s, now_ms=now_ms()))


async def _server_channel(svc: Services, me: Principal, channel_id: str) -> Channel:
    """A server channel the caller can see: 404 otherwise (a group channel they are not in included),
    422 ``not_server_channel`` for their own direct or group channel."""
    channel, _ = await _channel_perms(svc, me, channel_id)
    if channel.kind != "server":
        raise ApiError(422, "not_server_channel", f"channel {channel_id!r} is not a server channel")
    return channel


@router.patch("/channels/{channel_id}", response_model=ServerChannelOut)
async def edit_channel(channel_id: str, body: EditServerChannel, me: Me, svc: Svc) -> ServerChannelOut:
    """Rename a server channel or set its slow mode (``manage_channels``)."""
    await _server_channel(svc, me, channel_id)
    return _channel(await svc.directory.edit_server_channel(me.user_id, channel_id, name=body.name,
                                                            slow_mode_s=body.slow_mode_s, now_ms=now_ms()))


@router.delete("/channels/{channel_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_channel(channel_id: str, me: Me, svc: Svc) -> Response:
    await _server_channel(svc, me, channel_id)
    await svc.directory.delete_server_channel(me.user_id, channel_id, now_ms=now_ms())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/channels/{channel_id}/permissions", response_model=OverwriteList)
async def list_overwrites(channel_id: str, me: Me, svc: Svc) -> OverwriteList:
    await _server_channel(svc, me, channel_id)
    return OverwriteList(overwrites=[_overwrite(o) for o in await svc.directory.overwrites(channel_id)])


@router.get("/channels/{channel_id}/permissions/me", response_model=MyPermissions)
async def my_permissions(channel_id: str, me: Me, svc: Svc) -> MyPermissions:
    """The caller's effective permissions in a channel (any kind), their timeout and its slow mode."""
    await _channel_perms(svc, me, channel_id)
    access = (await svc.directory.channel_access([(channel_id, me.user_id)]))[(channel_id, me.user_id)]
    return MyPermissions(channel_id=channel_id, server_id=access.server_id, permissions=P.names(access.perms),
                         timeout_until_ms=access.timeout_until_ms, slow_mode_s=access.slow_mode_s)


@router.put("/channels/{channel_id}/permissions/{target}/{target_id}", response_model=OverwriteOut)
async def set_overwrite(channel_id: str, target: Literal["role", "member"], target_id: str, body: OverwriteBody,
                        me: Me, svc: Svc) -> OverwriteOut:
    """Set a role's (the server id for ``@everyone``) or a member's overwrite; both lists empty removes it
    (answered with empty lists)."""
    allow, deny = _perms(body.allow), _perms(body.deny)
    await _server_channel(svc, me, channel_id)
    result = await svc.directory.set_overwrite(me.user_id, channel_id, target, target_id, allow=allow, deny=deny,
                                               now_ms=now_ms())
    if result is None:
        return OverwriteOut(channel_id=channel_id, target=target, target_id=target_id, allow=[], deny=[])
    return _overwrite(result)


@router.delete("/channels/{channel_id}/permissions/{target}/{target_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_overwrite(channel_id: str, target: Literal["role", "member"], target_id: str, me: Me,
                           svc: Svc) -> Response:
    await _server_channel(svc, me, channel_id)
    await svc.directory.set_overwrite(me.user_id, channel_id, target, target_id, allow=NONE, deny=NONE,
                                      now_ms=now_ms())
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- invites ---------------------------------------------------------------------------------------


@router.post("/servers/{server_id}/invites", response_model=InviteOut, status_code=status.HTTP_201_CREATED)
async def create_invite(server_id: str, body: CreateInvite, me: Me, svc: Svc) -> InviteOut:
    now = now_ms()
    expires = now + body.expires_in_s * 1000 if body.expires_in_s is not None else None
    return _invite(await svc.directory.create_invite(me.user_id, server_id, channel_id=body.channel_id,
                                                     max_uses=body.max_uses, expires_ms=expires, now_ms=now))


@router.get("/servers/{server_id}/invites", response_model=InviteList)
async def list_invites(server_id: str, me: Me, svc: Svc, limit: PageLimit = PAGE_DEFAULT,
                       cursor: Cursor = None) -> InviteList:
    """Every invite with ``manage_server``; otherwise the caller's own. Oldest first, a page at a time."""
    _, perms = await _member_of(svc, me, server_id)
    every = Permission.MANAGE_SERVER in perms or Permission.ADMINISTRATOR in perms
    mine = [i for i in await svc.directory.invites(server_id) if every or i.creator == me.user_id]
    page, nxt = paging.slice_page(mine, lambda i: (i.created_ms, i.code), listing=f"invites/{server_id}",
                                  limit=limit, cursor=cursor)
    return InviteList(invites=[_invite(i) for i in page], next_cursor=nxt)


def _unusable(invite: Invite, now: int) -> Literal["invite_revoked", "invite_expired", "invite_used_up"] | None:
    if invite.revoked:
        return "invite_revoked"
    if invite.expires_ms is not None and now >= invite.expires_ms:
        return "invite_expired"
    if invite.max_uses is not None and invite.uses >= invite.max_uses:
        return "invite_used_up"
    return None


@router.get("/invites/{code}", response_model=InvitePreview)
async def preview_invite(code: str, _me: Me, svc: Svc) -> InvitePreview:
    invite = await svc.directory.get_invite(code)
    server = await svc.directory.get_server(invite.server_id) if invite else None
    if invite is None or server is None:
        raise ApiError(404, "invite_not_found", f"no such invite {code!r}")
    channel = await svc.directory.get_channel(invite.channel_id) if invite.channel_id else None
    reason = _unusable(invite, now_ms())
    return InvitePreview(code=code, server_id=server.server_id, server_name=server.name, channel_id=invite.channel_id,
                         channel_name=channel.name if channel else None, expires_ms=invite.expires_ms,
                         usable=reason is None, reason=reason)


@router.post("/invites/{code}/accept", response_model=Joined)
async def accept_invite(code: str, me: Me, svc: Svc) -> Joined:
    invite = await svc.directory.get_invite(code)
    was_member = invite is not None and await svc.directory.member(invite.server_id, me.user_id) is not None
    server = await svc.directory.use_invite(me.user_id, code, now_ms=now_ms())
    if not was_member:
        await _server_event(svc, me.user_id, server.server_id, "joined", by=me.user_id)
    return Joined(server=_server(server), joined=not was_member)


@router.delete("/invites/{code}", response_model=InviteOut)
async def revoke_invite(code: str, me: Me, svc: Svc) -> InviteOut:
    return _invite(await svc.directory.revoke_invite(me.user_id, code, now_ms=now_ms()))


# --- moderation ------------------------------------------------------------------------------------


@router.delete("/servers/{server_id}/members/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def kick(server_id: str, user_id: str, me: Me, svc: Svc) -> Response:
    """Kick a member (``kick_members``, below you). Leave a server with ``POST .../leave``."""
    await svc.directory.kick(me.user_id, server_id, user_id, now_ms=now_ms())
    await _server_event(svc, user_id, server_id, "removed", by=me.user_id, reason="kick")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/servers/{server_id}/bans", response_model=BanList)
async def list_bans(server_id: str, me: Me, svc: Svc, limit: PageLimit = PAGE_DEFAULT,
                    cursor: Cursor = None) -> BanList:
    """Oldest first, a page at a time (``ban_members``)."""
    _, perms = await _member_of(svc, me, server_id)
    _require(perms, Permission.BAN_MEMBERS)
    page, nxt = paging.slice_page(await svc.directory.bans(server_id), lambda b: (b.created_ms, b.user_id),
                                  listing=f"bans/{server_id}", limit=limit, cursor=cursor)
    return BanList(bans=[_ban(b) for b in page], next_cursor=nxt)


@router.put("/servers/{server_id}/bans/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def ban(server_id: str, user_id: str, me: Me, svc: Svc, body: BanBody | None = None) -> Response:
    was_member = await svc.directory.member(server_id, user_id) is not None
    await svc.directory.ban(me.user_id, server_id, user_id, reason=body.reason if body else None, now_ms=now_ms())
    if was_member:
        await _server_event(svc, user_id, server_id, "removed", by=me.user_id, reason="ban")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/servers/{server_id}/bans/{user_id}", response_model=Changed)
async def unban(server_id: str, user_id: str, me: Me, svc: Svc) -> Changed:
    return Changed(changed=await svc.directory.unban(me.user_id, server_id, user_id, now_ms=now_ms()))


@router.put("/servers/{server_id}/members/{user_id}/timeout", response_model=MemberOut)
async def timeout(server_id: str, user_id: str, body: TimeoutBody, me: Me, svc: Svc) -> MemberOut:
    await svc.directory.timeout(me.user_id, server_id, user_id, body.until_ms, now_ms=now_ms())
    return await _member_out(svc, server_id, user_id)


@router.delete("/servers/{server_id}/members/{user_id}/timeout", response_model=MemberOut)
async def clear_timeout(server_id: str, user_id: str, me: Me, svc: Svc) -> MemberOut:
    await svc.directory.timeout(me.user_id, server_id, user_id, None, now_ms=now_ms())
    return await _member_out(svc, server_id, user_id)


async def _member_out(svc: Services, server_id: str, user_id: str) -> MemberOut:
    member = await svc.directory.member(server_id, user_id)
    if member is None:
        raise ApiError(404, "member_not_found", f"no such member {user_id!r}")
    return _member(member)


@router.get("/servers/{server_id}/audit-log", response_model=AuditList)
async def audit_log(server_id: str, me: Me, svc: Svc, limit: PageLimit = PAGE_DEFAULT,
                    cursor: Cursor = None) -> AuditList:
    """Newest first (``view_audit_log``)."""
    _, perms = await _member_of(svc, me, server_id)
    _require(perms, Permission.VIEW_AUDIT_LOG)
    before = paging.decode(cursor, f"audit/{server_id}")[0] if cursor else None
    if before is not None and not before.isdigit():
        raise ApiError(422, "invalid_cursor", "this cursor does not belong to this listing; start from the first page")
    page = await svc.directory.audit_log(server_id, before=int(before) if before else None, limit=limit)
    nxt = paging.encode(f"audit/{server_id}", page.next_before) if page.next_before is not None else None
    return AuditList(entries=[_audit(e) for e in page.entries], next_cursor=nxt)
