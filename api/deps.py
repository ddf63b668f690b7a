"""What every route module of the API shares: the services, the caller, and the membership check.

Route modules (:mod:`api.routes`, :mod:`api.state_routes`, :mod:`api.device_routes`,
:mod:`api.hooks`, :mod:`api.provisioning`) import from here and never from each other.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from argon2 import PasswordHasher
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api import paging
from api.errors import ApiError
from api.events import EventSink, SendPath
from api.limits import Limits
from mqchat import auth
from mqchat.config import Settings
from mqchat.errors import AuthError, StorageUnavailable
from mqchat.objects.service import Attachments
from mqchat.storage.base import Channel, MessageStore, ServerDirectory
from mqchat.storage.push_state import PushState
from mqchat.storage.redis_state import RedisState
from mqchat.storage.tokens import TokenStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    """The open stores and helpers of the API process (built by :func:`api.app.create_app`)."""

    settings: Settings
    keys: auth.KeySet
    directory: ServerDirectory
    """Servers, roles and permissions included (docs/permissions.md)."""
    store: MessageStore
    state: RedisState
    push: PushState
    """On the same Redis client as ``state``."""
    events: EventSink
    hasher: PasswordHasher
    dummy_hash: str
    """Verified against when a username is unknown, so both cases take the same time."""
    limits: Limits
    tokens: TokenStore
    """Refresh token families and revocations (on the same Redis client as ``state``)."""
    sends: SendPath | None = None
    """Where ``POST /v1/channels/{id}/messages`` goes (the broker); ``None``: that route answers 503."""
    attachments: Callable[[], Attachments] | None = None
    """The attachment service, opened on first call (the same one the upload routes use); history,
    sync, threads, pins and search use it for the ``attachment`` of ``file`` messages. ``None``:
    messages are returned without attachments."""


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


Svc = Annotated[Services, Depends(services)]
_bearer = HTTPBearer(auto_error=False)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def principal(
    svc: Svc, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> auth.Principal:
    if creds is None:
        raise ApiError(401, "unauthorized", "missing 'Authorization: Bearer <token>'")
    try:
        me = auth.verify(svc.keys, creds.credentials, now=int(time.time()))
    except AuthError as exc:
        raise ApiError(401, f"token_{exc.reason}", exc.message) from None
    if not me.is_service:
        try:
            revoked = await svc.tokens.is_revoked(me.user_id, me.device_id, me.issued_at)
        except StorageUnavailable as exc:  # access tokens are short-lived: fail open, like the rate limits
            logger.warning("revocation not checked: %s", exc)
            revoked = False
        if revoked:
            raise ApiError(401, "token_revoked", "this device was logged out; log in again")
    return me


Me = Annotated[auth.Principal, Depends(principal)]


async def member_channel(svc: Services, me: auth.Principal, channel_id: str) -> Channel:
    """The channel, if the caller is a member of it.

    Raises:
        ApiError: 404 ``channel_not_found`` when it does not exist or the caller is not a member
            (non-members learn nothing about a channel's existence).
    """
    channel = await svc.directory.get_channel(channel_id)
    if channel is None or not await svc.directory.memberships([(channel_id, me.user_id)]):
        raise ApiError(404, "channel_not_found", "no such channel, or you are not a member")
    return channel


#: Members embedded in a channel object (``me/channels``, ``me/inbox``, a created channel): the first ones
#: by user id, the rest at ``GET /v1/channels/{id}/members``. A direct channel's two always fit.
EMBEDDED_MEMBERS = 20
#: Server members one embedded list of a server channel looks at (a private channel of a large server
#: may then embed fewer than it has, with a cursor).
EMBEDDED_SCAN = 200


def members_listing(channel_id: str) -> str:
    """The :mod:`api.paging` listing of a channel's members (a cursor is valid for its channel only)."""
    return f"channel-members/{channel_id}"


async def member_page(svc: Services, channel_id: str, *, limit: int, cursor: str | None,
                      scan: int = 2000) -> tuple[list[str], str | None]:
    """A page of the channel's members and the cursor of the next one (None on the last)."""
    after = paging.decode(cursor, members_listing(channel_id))[0] if cursor else None
    page = await svc.directory.channel_members(channel_id, after=after, limit=limit, scan=scan)
    nxt = paging.encode(members_listing(channel_id), page.next_after) if page.next_after is not None else None
    return page.user_ids, nxt


async def embedded_members(svc: Services, channel_id: str) -> tuple[list[str], str | None]:
    """The members a channel object carries, and the cursor of the rest."""
    return await member_page(svc, channel_id, limit=EMBEDDED_MEMBERS, cursor=None, scan=EMBEDDED_SCAN)
