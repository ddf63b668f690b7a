"""The user directory and profiles: ``GET /v1/users/{id}``, ``GET /v1/users/by-name/{username}``,
``GET /v1/me`` and ``PATCH /v1/me`` (docs/http.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.deps import Me, Svc
from api.errors import ApiError
from mqchat.storage.base import User

router = APIRouter(prefix="/v1")

DisplayName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
AvatarUrl = Annotated[str, StringConstraints(pattern=r"^https://[^\s]+$", max_length=2000)]


class Profile(BaseModel):
    """What anyone signed in may see of a user."""

    user_id: str
    username: str
    display_name: str | None
    avatar_url: str | None


class MyProfile(Profile):
    created_ms: int


class EditProfile(BaseModel):
    """Fields left out keep their value; ``null`` clears one."""

    model_config = ConfigDict(extra="forbid")
    display_name: DisplayName | None = Field(None, description="1-64 characters, not blank.")
    avatar_url: AvatarUrl | None = Field(None, description="An https URL of at most 2000 characters.")


def profile(user: User) -> Profile:
    return Profile(user_id=user.user_id, username=user.username, display_name=user.display_name,
                   avatar_url=user.avatar_url)


def _mine(user: User) -> MyProfile:
    return MyProfile(**profile(user).model_dump(), created_ms=user.created_ms)


def _found(user: User | None, what: str) -> User:
    if user is None:
        raise ApiError(404, "user_not_found", f"no such user {what!r}")
    return user


@router.get("/users/by-name/{username}", response_model=Profile)
async def user_by_name(username: str, _me: Me, svc: Svc) -> Profile:
    """Exact username, ignoring case (no prefix search: the directory is not enumerable)."""
    return profile(_found(await svc.directory.user_by_name(username), username))


@router.get("/users/{user_id}", response_model=Profile)
async def get_user(user_id: str, _me: Me, svc: Svc) -> Profile:
    return profile(_found(await svc.directory.get_user(user_id), user_id))


@router.get("/me", response_model=MyProfile)
async def get_me(me: Me, svc: Svc) -> MyProfile:
    return _mine(_found(await svc.directory.get_user(me.user_id), me.user_id))


@router.patch("/me", response_model=MyProfile)
async def edit_me(body: EditProfile, me: Me, svc: Svc) -> MyProfile:
    user = _found(await svc.directory.get_user(me.user_id), me.user_id)
    given = body.model_fields_set
    updated = await svc.directory.update_profile(
        me.user_id,
        display_name=body.display_name if "display_name" in given else user.display_name,
        avatar_url=body.avatar_url if "avatar_url" in given else user.avatar_url)
    return _mine(updated)
