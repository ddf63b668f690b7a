"""Bulk account provisioning: ``POST /v1/admin/users``, for services only.

Deployments whose users sign in with an external identity provider still need mqchat to know each
user (channel members must exist), and ``POST /v1/users`` wants a password it then hashes with
Argon2id (~0.1 s of CPU each, on purpose). This endpoint creates accounts **without a password**
(they can never use ``POST /v1/login``; their tokens come from the issuer), up to 1,000 per call,
and only for a caller holding a ``role: service`` token. The load simulator (``mobile_sim``)
uses it to provision thousands of users in seconds when it holds the signing key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from api import models
from api.deps import Me, Svc, now_ms
from api.errors import ApiError
from mqchat.errors import Conflict

#: Stored in place of a password hash: not an Argon2 hash, so verifying any password against it
#: fails (login answers ``bad_credentials``, as for a wrong password).
NO_PASSWORD = "!"
MAX_USERS = 1000

router = APIRouter(prefix="/v1/admin")


class ProvisionUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: models.Username = Field(description="3-32 characters from [A-Za-z0-9_.-]; unique, case-insensitive.")


class ProvisionUsers(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: Annotated[list[ProvisionUser], Field(min_length=1, max_length=MAX_USERS)]


class ProvisionedUsers(BaseModel):
    users: list[models.UserCreated] = Field(description="The accounts created, in request order.")
    taken: list[str] = Field(description="Usernames that already existed (nothing was changed for them).")


@router.post("/users", status_code=status.HTTP_201_CREATED, response_model=ProvisionedUsers,
             responses={403: {"description": "forbidden: not a service token"}})
async def provision_users(body: ProvisionUsers, me: Me, svc: Svc) -> ProvisionedUsers:
    """Create password-less accounts (external identity provider, load tests); service tokens only."""
    if not me.is_service:
        raise ApiError(403, "forbidden", "provisioning needs a service token (role: service)")
    created: list[models.UserCreated] = []
    taken: list[str] = []
    now = now_ms()
    for item in body.users:
        try:
            user = await svc.directory.create_user(item.username, NO_PASSWORD, now_ms=now)
        except Conflict:
            taken.append(item.username)
            continue
        created.append(models.UserCreated(user_id=user.user_id, username=user.username))
    return ProvisionedUsers(users=created, taken=taken)
