"""The token lifecycle end to end (docs/security.md): HTTP login, refresh and logout against a
running system, and what the broker does with the devices' MQTT connections."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.broker.rawclient import RawClient, assert_closed
from tests.conftest import System

pytestmark = pytest.mark.e2e

PW = "correct horse battery"
#: The documented bound: a revoked device is disconnected within this time (docs/security.md).
REVOCATION_BOUND_S = 3.0


async def login(api: httpx.AsyncClient, user: str, device: str) -> dict[str, Any]:
    r = await api.post("/v1/login", json={"username": user, "password": PW, "device_id": device})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def mqtt(system: System, session: dict[str, Any]) -> RawClient:
    return RawClient(system.mqtt_port, f"{session['user_id']}:{session['device_id']}",
                     username=session["user_id"], password=session["token"])


async def test_logout_all_disconnects_every_device_within_the_bound(system: System) -> None:
    async with httpx.AsyncClient(base_url=system.api) as api:
        for name in ("alice", "bob"):
            assert (await api.post("/v1/users", json={"username": name, "password": PW})).status_code == 201
        sessions = [await login(api, "alice", d) for d in ("phone", "laptop", "tablet")]
        bob = await login(api, "bob", "phone")
        devices = [mqtt(system, s) for s in sessions]
        bystander = mqtt(system, bob)
        try:
            start = time.monotonic()
            r = await api.post("/v1/logout/all", headers={"Authorization": f"Bearer {sessions[0]['token']}"})
            assert r.json()["sessions_ended"] == 3
            for device in devices:
                await asyncio.to_thread(assert_closed, device.sock, REVOCATION_BOUND_S, what="a logged-out device")
            assert time.monotonic() - start < REVOCATION_BOUND_S
            bystander.ping()
            # its old token no longer connects; a new login does
            RawClient(system.mqtt_port, f"{sessions[1]['user_id']}:laptop", username=sessions[1]["user_id"],
                      password=sessions[1]["token"], expect_rc=0x05).close()
            mqtt(system, await login(api, "alice", "laptop")).close()
        finally:
            for c in [*devices, bystander]:
                c.close()


async def test_refresh_rotates_and_reuse_ends_the_login_and_its_connection(system: System) -> None:
    async with httpx.AsyncClient(base_url=system.api) as api:
        assert (await api.post("/v1/users", json={"username": "alice", "password": PW})).status_code == 201
        first = await login(api, "alice", "phone")
        r = await api.post("/v1/token/refresh", json={"refresh_token": first["refresh_token"]})
        assert r.status_code == 200, r.text
        second = r.json()
        device = mqtt(system, second)
        try:
            # the new access token is handed to the broker in-band; the connection stays
            device.publish(f"auth/{second['user_id']}/phone", second["token"].encode(), qos=1)
            device.ping()
            # a replay of the spent refresh token ends the login, and the broker closes the connection
            r = await api.post("/v1/token/refresh", json={"refresh_token": first["refresh_token"]})
            assert (r.status_code, r.json()["error"]["code"]) == (401, "refresh_reused")
            await asyncio.to_thread(assert_closed, device.sock, REVOCATION_BOUND_S,
                                    what="the device of a reused family")
            r = await api.post("/v1/token/refresh", json={"refresh_token": second["refresh_token"]})
            assert r.status_code == 401
        finally:
            device.close()
