"""``POST /v1/admin/users``: password-less accounts in bulk, for service tokens only."""

from __future__ import annotations

import time
from typing import Any

from mqchat import auth
from tests.api.conftest import PW, bearer, error, user


def service_token(keys: auth.KeySet) -> str:
    return auth.issue(keys, user_id="svc-provisioner", device_id="sim", now=int(time.time()), role="service")


async def test_service_creates_accounts_in_bulk_and_reports_taken_names(ctx) -> None:  # type: ignore[no-untyped-def]
    client = ctx.client
    await user(client, "existing")
    r = await client.post("/v1/admin/users", headers=bearer(service_token(ctx.keys)),
                          json={"users": [{"username": "bulk-1"}, {"username": "EXISTING"}, {"username": "bulk-2"}]})
    assert r.status_code == 201, r.text
    doc = r.json()
    assert [u["username"] for u in doc["users"]] == ["bulk-1", "bulk-2"]
    assert doc["taken"] == ["EXISTING"]
    # The accounts exist: another user can put them in a channel.
    _, token = await user(client, "creator")
    r = await client.post("/v1/channels", headers=bearer(token),
                          json={"kind": "group", "members": [u["user_id"] for u in doc["users"]]})
    assert r.status_code == 201, r.text


async def test_provisioned_account_cannot_log_in_with_any_password(ctx) -> None:  # type: ignore[no-untyped-def]
    client = ctx.client
    r = await client.post("/v1/admin/users", headers=bearer(service_token(ctx.keys)),
                          json={"users": [{"username": "nopass"}]})
    assert r.status_code == 201
    for password in (PW, "!", ""):
        r = await client.post("/v1/login", json={"username": "nopass", "password": password or "x",
                                                 "device_id": "phone"})
        assert error(r) == (401, "bad_credentials")


async def test_device_token_is_forbidden_and_bad_bodies_are_refused(ctx) -> None:  # type: ignore[no-untyped-def]
    client = ctx.client
    _, token = await user(client, "alice")
    r = await client.post("/v1/admin/users", headers=bearer(token), json={"users": [{"username": "x-1"}]})
    assert error(r) == (403, "forbidden")
    assert error(await client.post("/v1/admin/users", json={"users": [{"username": "x-1"}]})) == (401, "unauthorized")
    svc = bearer(service_token(ctx.keys))
    bodies: list[dict[str, Any]] = [{"users": []}, {"users": [{"username": "a"}]},
                                    {"users": [{"username": "ok-name", "password": PW}]},
                                    {"users": [{"username": f"u-{i}"} for i in range(1001)]}]
    for body in bodies:
        assert error(await client.post("/v1/admin/users", headers=svc, json=body)) == (422, "invalid_request")
