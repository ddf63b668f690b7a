"""Request and response bodies of the HTTP API (pydantic, so they appear in the OpenAPI document).

A body that is also a wire payload is not redefined here: :data:`MessageOut` *is*
:class:`mqchat.schema.ChannelMessage`, annotated with :class:`WireStruct` so pydantic can validate,
serialize and document the msgspec struct. What the API returns for a message is then the very
struct, field for field, that the bridge publishes on ``ch/{channel}``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional, get_args, get_origin

import msgspec
from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, StringConstraints, model_validator
from pydantic_core import core_schema

from mqchat import schema

IdStr = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Username = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{3,32}$")]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateUser(_Strict):
    username: Username = Field(description="3-32 characters from [A-Za-z0-9_.-]; unique, case-insensitive.")
    password: Password


class UserCreated(BaseModel):
    user_id: str
    username: str


class Login(_Strict):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    device_id: IdStr = Field(description="Chosen by the app; stable per installation.")


class MqttEndpoint(BaseModel):
    host: str
    port: int
    ws_url: str
    presence_refresh_ms: int | None = Field(
        None, description="Re-publish your status on `presence/{me}/{device}` this often while connected (the "
        "presence heartbeat of an external broker); null: the broker keeps your presence itself.")


class LoginResult(BaseModel):
    token: str = Field(description="The access token (short-lived: `auth.token_ttl_s`).")
    refresh_token: str = Field(description="Opaque; exchanged once for a new pair at `POST /v1/token/refresh`.")
    user_id: str
    device_id: str
    expires_at: int = Field(description="When the access token expires (s since the epoch).")
    mqtt: MqttEndpoint


class RefreshRequest(_Strict):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class TokenPair(BaseModel):
    token: str = Field(description="The new access token.")
    refresh_token: str = Field(description="The new refresh token; the one presented is no longer valid.")
    user_id: str
    device_id: str
    expires_at: int


class LoggedOut(BaseModel):
    devices: Literal["this", "all"]
    sessions_ended: int = Field(description="Refresh token families (logins) ended.")


class CreateChannel(_Strict):
    kind: Literal["direct", "group"]
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    members: list[IdStr] = Field(default_factory=list, max_length=1000)

    @model_validator(mode="after")
    def _direct_has_one_peer(self) -> CreateChannel:
        if self.kind == "direct" and len(set(self.members)) != 1:
            raise ValueError("a direct channel has exactly one other member")
        return self


class ChannelOut(BaseModel):
    channel_id: str
    kind: Literal["direct", "group", "server"]
    name: str | None
    created_by: str
    created_ms: int
    members: list[str] = Field(description="The first members by user id (at most 20); all of them when "
                               "`members_next_cursor` is null.")
    members_next_cursor: str | None = Field(
        None, description="More members follow: pass as `cursor` to `GET /v1/channels/{id}/members`.")


class ChannelMembers(BaseModel):
    channel_id: str
    members: list[str] = Field(description="User ids in ascending order; a page may hold fewer than `limit` "
                               "(even none) while `next_cursor` is set.")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last page.")


class CreatedChannel(ChannelOut):
    created: bool = Field(description="False when an existing direct channel was returned.")


class ChannelList(BaseModel):
    channels: list[ChannelOut] = Field(description="Ordered by channel id.")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last page.")


class AddMember(_Strict):
    user_id: IdStr


class Membership(BaseModel):
    channel_id: str
    user_id: str
    changed: bool


class WireStruct:
    """Lets a msgspec struct of :mod:`mqchat.schema` stand in a pydantic model: ``Annotated[S, WireStruct("Name")]``.

    The struct is the one definition. Pydantic accepts an instance of it (or a mapping of its
    fields), serializes it as msgspec does (every field, in declaration order), and documents it as
    the component ``Name`` with the struct's fields and docstring. For output bodies only: every
    field is listed as required, because every field is always sent.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __get_pydantic_core_schema__(self, source: type[msgspec.Struct],
                                     handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        shape = core_schema.typed_dict_schema(
            {f.name: core_schema.typed_dict_field(handler.generate_schema(_wire(f.type)), required=True)
             for f in msgspec.structs.fields(source)},
            ref=self.name,
            metadata={"pydantic_js_updates": {"title": self.name, "description": (source.__doc__ or "").strip()}})

        def from_fields(value: Any) -> msgspec.Struct:
            return value if isinstance(value, source) else source(**value)

        return core_schema.no_info_after_validator_function(
            from_fields, core_schema.union_schema([core_schema.is_instance_schema(source), shape]),
            serialization=core_schema.plain_serializer_function_ser_schema(msgspec.to_builtins, return_schema=shape))


def _wire(tp: Any) -> Any:
    """A field type with every nested struct (alone, optional, or in a list) annotated as a WireStruct."""
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return Annotated[tp, WireStruct(tp.__name__)]
    args = get_args(tp)
    if args and get_origin(tp) is list:
        return list[_wire(args[0])]  # type: ignore[misc]
    if args and type(None) in args and len(args) == 2:
        inner = next(a for a in args if a is not type(None))
        return Optional[_wire(inner)]  # noqa: UP045 - built at run time from a value
    return tp


#: A message as returned by the inbox: the ``ch/{channel}`` payload itself.
MessageOut = Annotated[schema.ChannelMessage, WireStruct("MessageOut")]
#: An event as history, sync, threads and pins return it: the ``ch/{channel}`` payload plus, on
#: messages, their folded ``state`` now (docs/http.md).
HistoryMessageOut = Annotated[schema.HistoryMessage, WireStruct("HistoryMessageOut")]


class HistoryOut(BaseModel):
    channel: str
    epoch: int
    last_seq: int
    has_more: bool
    messages: list[HistoryMessageOut]


class ThreadOut(BaseModel):
    channel: str
    root: HistoryMessageOut
    replies: list[HistoryMessageOut] = Field(description="In seq order, after the cursor `after`.")
    has_more: bool


class PinsOut(BaseModel):
    channel: str
    messages: list[HistoryMessageOut] = Field(description="Pinned messages, in seq order.")


class SendOut(BaseModel):
    """The bridge's ack of a send made over HTTP, as a device gets it on ``dev/.../ack``."""

    cmid: str | None
    channel: str
    ok: bool
    id: str | None = None
    seq: int | None = None
    epoch: int | None = None


class MarkRead(_Strict):
    seq: int = Field(ge=0, description="Highest seq the user has read.")
    epoch: int | None = Field(None, ge=1, description="The epoch `seq` belongs to; default: the channel's current.")


class ReadState(BaseModel):
    channel: str
    epoch: int
    seq: int
    unread: int
    mentions: int
    badge: int = Field(description="Unread messages over all the user's channels.")


class InboxEntry(BaseModel):
    channel_id: str
    kind: Literal["direct", "group", "server"]
    name: str | None
    members: list[str] = Field(description="As in a channel: the first members (at most 20).")
    members_next_cursor: str | None = Field(None, description="As in a channel.")
    epoch: int
    last_seq: int
    read_seq: int
    unread: int
    mentions: int
    last_message: MessageOut | None
    activity_ms: int = Field(description="Time of the last message, or of the channel's creation.")


class Inbox(BaseModel):
    channels: list[InboxEntry] = Field(description="Most recent activity first.")
    badge: int = Field(description="Unread over all your channels (not only this page).")
    mentions: int = Field(description="Unread mentions over all your channels.")
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last page.")


class SyncCursor(_Strict):
    channel: IdStr
    epoch: int = Field(ge=1)
    last_seq: int = Field(ge=0)


class SyncRequest(_Strict):
    channels: list[SyncCursor] = Field(default_factory=list, max_length=10_000)
    limit: int = Field(500, ge=1, le=10_000, description="Most messages returned per channel.")


class SyncChannel(BaseModel):
    channel: str
    status: Literal["ok", "new", "reset"] = Field(
        description="ok: the messages after your last_seq; new: a channel you did not list (latest page); "
        "reset: your epoch is gone, drop what you have for this channel (latest page).")
    epoch: int
    last_seq: int
    has_more: bool = Field(description="More messages follow: call sync again with the new last_seq.")
    messages: list[HistoryMessageOut]


class SyncResult(BaseModel):
    channels: list[SyncChannel]
    removed: list[str] = Field(description="Channels you listed that you are no longer a member of.")
    badge: int


class ChannelPresence(BaseModel):
    channel: str
    online: int = Field(description="Members with at least one device online or away.")
