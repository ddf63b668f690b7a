"""Auth hooks for external MQTT brokers: the same identity rule and topic policy as the embedded
broker's plugins, over HTTP, so a clustered EMQX or VerneMQ enforces exactly our rules.

EMQX (HTTP authentication and HTTP authorization, JSON bodies; templates in deploy/brokers/emqx/):

- ``POST /hooks/emqx/authn`` ``{"clientid", "username", "password"}`` →
  ``{"result": "allow"|"deny", "is_superuser": bool}``. mqchat's own processes are superusers, so
  EMQX never asks the authorization hook about them.
- ``POST /hooks/emqx/authz`` ``{"clientid", "username", "topic", "action": "publish"|"subscribe"}`` →
  ``{"result": "allow"|"deny"}``.

VerneMQ (vmq_webhooks; the hook name arrives in the ``vernemq-hook`` header), one endpoint
``POST /hooks/vernemq``:

- ``auth_on_register`` ``{"client_id", "username", "password", ...}`` → ``{"result": "ok"}`` or
  ``{"result": {"error": "not_allowed"}}``.
- ``auth_on_subscribe`` ``{"client_id", "username", "topics": [{"topic", "qos"}]}`` →
  ``{"result": "ok", "topics": [...]}`` with refused filters at qos 128 (SUBACK 0x80).
- ``auth_on_publish`` ``{"client_id", "username", "topic", "qos", "payload", "retain"}`` →
  ``{"result": "ok"}`` or an error.

Authorization calls carry no token: the client id was bound to the token at connect (the broker
refuses the CONNECT otherwise), so ``{user}:{device}`` from the client id is the principal, and a
user id starting with ``svc-`` is a service (device tokens for such ids are refused). External
brokers do not ask again on delivery, so there a removed member keeps receiving until it
reconnects or resubscribes; the embedded broker checks every delivery. Hook requests must come
from the broker only: protect the paths at the network level (deploy/ notes).
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict

from api.deps import Svc
from mqchat import access, auth, policy
from mqchat.config import Settings
from mqchat.errors import AuthError
from mqchat.storage.base import ServerDirectory

router = APIRouter(prefix="/hooks", tags=["broker hooks"])


class _Loose(BaseModel):
    # Brokers send more fields than we use (peer address, mountpoint, ...): ignore them.
    model_config = ConfigDict(extra="ignore")


class EmqxAuthn(_Loose):
    clientid: str
    username: str | None = None
    password: str | None = None


class EmqxAuthz(_Loose):
    clientid: str
    username: str | None = None
    topic: str
    action: str


def membership_cache(settings: Settings, directory: ServerDirectory) -> access.MembershipCache:
    """The hooks' cache of users' channel sets, with the broker's lifetimes (``broker.membership_cache_s``
    while the API follows the invalidation feed, ``broker.membership_cache_unfed_s`` otherwise)."""
    b = settings.broker
    return access.MembershipCache(directory, b.membership_cache_unfed_s, fed_ttl_s=b.membership_cache_s)


def _membership(request: Request) -> access.MembershipCache:
    cache: access.MembershipCache | None = getattr(request.app.state, "hook_membership", None)
    if cache is None:
        svc = request.app.state.services
        cache = request.app.state.hook_membership = membership_cache(svc.settings, svc.directory)
    return cache


def _authenticate(svc: Any, client_id: str | None, username: str | None, password: str | None) -> auth.Principal:
    principal = auth.verify(svc.keys, password or "", now=int(time.time()))
    auth.check_connect_identity(principal, client_id_=client_id, username=username)
    return principal


def _principal_from_ids(client_id: str, username: str | None) -> auth.Principal | None:
    """The principal an authenticated connection has, from its client id (see the module docstring)."""
    user, sep, device = client_id.partition(":")
    if not sep or user != username:
        return None
    role: auth.Role = "service" if user.startswith(auth.SERVICE_PREFIX) else "device"
    return auth.Principal(user, device, role, expires_at=0)


async def _allowed(request: Request, client_id: str, username: str | None, action: policy.Action, topic: str) -> bool:
    principal = _principal_from_ids(client_id, username)
    if principal is None:
        return False
    decision = await access.check(principal, action, topic, _membership(request))
    return decision.allowed


@router.post("/emqx/authn")
async def emqx_authn(body: EmqxAuthn, svc: Svc) -> dict[str, Any]:
    try:
        principal = _authenticate(svc, body.clientid, body.username, body.password)
    except AuthError:
        return {"result": "deny"}
    return {"result": "allow", "is_superuser": principal.is_service}


@router.post("/emqx/authz")
async def emqx_authz(body: EmqxAuthz, request: Request) -> dict[str, str]:
    if body.action not in ("publish", "subscribe"):
        return {"result": "deny"}
    allowed = await _allowed(request, body.clientid, body.username, policy.Action(body.action), body.topic)
    return {"result": "allow" if allowed else "deny"}


NOT_ALLOWED: dict[str, Any] = {"result": {"error": "not_allowed"}}


@router.post("/vernemq")
async def vernemq(request: Request, svc: Svc,
                  vernemq_hook: Annotated[str, Header(alias="vernemq-hook")]) -> dict[str, Any]:
    body = await request.json()
    if not isinstance(body, dict):
        return NOT_ALLOWED
    client_id, username = body.get("client_id"), body.get("username")
    if not isinstance(client_id, str) or not (username is None or isinstance(username, str)):
        return NOT_ALLOWED
    if vernemq_hook == "auth_on_register":
        try:
            _authenticate(svc, client_id, username, body.get("password"))
        except AuthError:
            return NOT_ALLOWED
        return {"result": "ok"}
    if vernemq_hook == "auth_on_subscribe":
        wanted = body.get("topics")
        if not isinstance(wanted, list):
            return NOT_ALLOWED
        granted = []
        for entry in wanted:
            topic = entry.get("topic") if isinstance(entry, dict) else None
            ok = isinstance(topic, str) and await _allowed(request, client_id, username, policy.Action.SUBSCRIBE,
                                                           topic)
            granted.append({"topic": topic, "qos": entry.get("qos", 0) if ok else 128})
        return {"result": "ok", "topics": granted}
    if vernemq_hook == "auth_on_publish":
        topic = body.get("topic")
        if isinstance(topic, str) and await _allowed(request, client_id, username, policy.Action.PUBLISH, topic):
            return {"result": "ok"}
        return NOT_ALLOWED
    return NOT_ALLOWED
