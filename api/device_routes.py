"""Push registrations of the calling device, and channel mutes.

A device registers its own token (the device comes from the bearer token, never from the body), and
registering again refreshes it. Responses show tokens shortened: a token is a credential to push
to the device, so it never goes back over the wire or into a log in full.
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from api.deps import Me, Svc, member_channel
from mqchat.storage.push_state import PushRegistration, PushState, redact

router = APIRouter(prefix="/v1")


def push_state(svc: Svc) -> PushState:
    return svc.push


Push = Annotated[PushState, Depends(push_state)]


class RegisterPush(BaseModel):
    model_config = ConfigDict(extra="forbid")

    platform: Literal["fcm", "apns"]
    token: Annotated[str, StringConstraints(min_length=8, max_length=4096, pattern=r"^[\x21-\x7e]+$")] = Field(
        description="The FCM registration token or the APNs device token (hex).")
    app: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = Field(
        None, description="APNs: the app's bundle id (apns-topic). FCM: the Firebase project id.")
    locale: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")] | None = None
    preview: bool = Field(True, description="False: this device's notifications never show message text.")


class PushDevice(BaseModel):
    device_id: str
    platform: Literal["fcm", "apns"]
    token: str = Field(description="Shortened; the full token is never returned.")
    app: str | None
    locale: str | None
    preview: bool
    updated_ms: int


class PushDevices(BaseModel):
    devices: list[PushDevice]


class SetMute(BaseModel):
    model_config = ConfigDict(extra="forbid")

    muted: bool


class MuteState(BaseModel):
    channel: str
    muted: bool


def _out(device_id: str, reg: PushRegistration) -> PushDevice:
    return PushDevice(device_id=device_id, platform=reg.platform, token=redact(reg.token), app=reg.app,
                      locale=reg.locale, preview=reg.preview, updated_ms=reg.updated_ms)


@router.put("/me/push", response_model=PushDevice)
async def register_push(body: RegisterPush, me: Me, svc: Svc, push: Push) -> PushDevice:
    """Register or refresh this device's push token (the device is the one in the bearer token). A user
    keeps at most ``limits.max_push_devices``: a new device replaces the least recently registered."""
    reg = PushRegistration(platform=body.platform, token=body.token, app=body.app, locale=body.locale,
                           preview=body.preview, updated_ms=time.time_ns() // 1_000_000)
    await push.register(me.user_id, me.device_id, reg, keep=svc.settings.limits.max_push_devices)
    return _out(me.device_id, reg)


@router.delete("/me/push", status_code=status.HTTP_204_NO_CONTENT, response_class=Response)
async def remove_push(me: Me, push: Push) -> Response:
    """Stop pushes to this device (e.g. on logout). Idempotent."""
    await push.unregister(me.user_id, me.device_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me/push", response_model=PushDevices)
async def list_push(me: Me, push: Push) -> PushDevices:
    """Your devices registered for push (tokens shortened)."""
    regs = await push.registrations(me.user_id)
    return PushDevices(devices=[_out(d, r) for d, r in sorted(regs.items())])


@router.put("/channels/{channel_id}/mute", response_model=MuteState)
async def set_mute(channel_id: str, body: SetMute, me: Me, svc: Svc, push: Push) -> MuteState:
    """Mute or unmute pushes from a channel, for all of your devices (messages still arrive)."""
    await member_channel(svc, me, channel_id)
    await push.set_muted(me.user_id, channel_id, body.muted)
    return MuteState(channel=channel_id, muted=body.muted)

