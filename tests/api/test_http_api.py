"""The HTTP API in-process (ASGI transport) over real SQLite stores."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mqchat import auth
from mqchat.schema import ChannelMessage
from mqchat.storage.base import StoredMessage
from tests.api.conftest import PW, bearer, error, user


async def test_signup_login_and_the_token_it_returns(ctx) -> None:  # type: ignore[no-untyped-def]
    client, keys = ctx.client, ctx.keys
    uid, _token = await user(client, "alice")
    r = await client.post("/v1/login", json={"username": "ALICE", "password": PW, "device_id": "tab-1"})
    doc = r.json()
    assert doc["mqtt"] == {"host": "chat.example.com", "port": 1999, "ws_url": "ws://chat.example.com:1998/mqtt",
                           "presence_refresh_ms": None}  # the embedded broker keeps presence itself
    p = auth.verify(keys, doc["token"], now=int(time.time()))
    assert (p.user_id, p.device_id, p.role) == (uid, "tab-1", "device")
    assert doc["expires_at"] == p.expires_at


def test_login_asks_for_a_presence_heartbeat_every_third_of_the_lease_with_an_external_broker(
        tmp_path: Path) -> None:
    from api.routes import presence_refresh_ms
    from mqchat.config import load_settings

    assert presence_refresh_ms(load_settings(data_dir=tmp_path)) is None
    external = load_settings(data_dir=tmp_path, mqtt={"broker": "external"}, broker={"presence_lease_ms": 9000})
    assert presence_refresh_ms(external) == 3000


@pytest.mark.parametrize(("body", "code"), [
    ({"username": "al", "password": PW}, "invalid_request"),
    ({"username": "a/b/c", "password": PW}, "invalid_request"),
    ({"username": "alice2", "password": "short"}, "invalid_request"),
    ({"username": "alice2"}, "invalid_request"),
    ({"username": "alice2", "password": PW, "admin": True}, "invalid_request"),
])
async def test_create_user_validation(ctx, body: dict[str, Any], code: str) -> None:  # type: ignore[no-untyped-def]
    client = ctx.client
    assert error(await client.post("/v1/users", json=body)) == (422, code)


async def test_malformed_json_body_is_a_json_error(ctx) -> None:  # type: ignore[no-untyped-def]
    client = ctx.client
    r = await client.post("/v1/users", content=b"{nope", headers={"content-type": "application/json"})
    assert error(r) == (422, "invalid_request")
    assert r.json()["error"]["message"] == "the body is not valid JSON at character 1"


async def test_duplicate_username_and_bad_logins(ctx) -> None:  # type: ignore[no-untyped-def]
    client = ctx.client
    await user(client, "alice")
    assert error(await client.post("/v1/users", json={"username": "Alice", "password": PW})) == (409, "username_taken")
    bad = {"username": "alice", "password": "wrong password", "device_id": "p"}
    assert error(await client.post("/v1/login", json=bad)) == (401, "bad_credentials")
    nobody = {"username": "nobody", "password": PW, "device_id": "p"}
    assert error(await client.post("/v1/login", json=nobody)) == (401, "bad_credentials")
    bad_device = {"username": "alice", "password": PW, "device_id": "a/b"}
    assert error(await client.post("/v1/login", json=bad_device)) == (422, "invalid_request")


async def test_tokens_are_required_and_checked(ctx) -> None:  # type: ignore[no-untyped-def]
    client, keys = ctx.client, ctx.keys
    uid, _ = await user(client, "alice")
    assert error(await client.get("/v1/me/channels")) == (401, "unauthorized")
    assert error(await client.get("/v1/me/channels", headers=bearer("garbage"))) == (401, "token_malformed")
    expired = auth.issue(keys, user_id=uid, device_id="p", now=int(time.time()) - 10_000, ttl_s=60)
    r = await client.get("/v1/me/channels", headers=bearer(expired))
    assert error(r) == (401, "token_expired")
    assert r.headers["www-authenticate"] == "Bearer"


async def test_channels_membership_and_permissions(ctx) -> None:  # type: ignore[no-untyped-def]
    client = ctx.client
    alice, at = await user(client, "alice")
    bob, bt = await user(client, "bob")
    carol, ct = await user(client, "carol")

    r = await client.post("/v1/channels", json={"kind": "group", "name": "team", "members": [bob]}, headers=bearer(at))
    assert r.status_code == 201
    group = r.json()
    assert group["members"] == sorted([alice, bob])
    assert group["created"] is True
    gid = group["channel_id"]

    d1 = await client.post("/v1/channels", json={"kind": "direct", "members": [bob]}, headers=bearer(at))
    d2 = await client.post("/v1/channels", json={"kind": "direct", "members": [alice]}, headers=bearer(bt))
    assert (d1.status_code, d2.status_code) == (201, 200)
    assert d1.json()["channel_id"] == d2.json()["channel_id"]

    for body, code in [
        ({"kind": "direct", "members": [bob, carol]}, "invalid_request"),
        ({"kind": "direct", "members": [alice]}, "invalid_request"),
        ({"kind": "group", "members": ["u-nobody"]}, "unknown_users"),
        ({"kind": "group", "members": ["bad/id"]}, "invalid_request"),
        ({"kind": "broadcast", "members": []}, "invalid_request"),
    ]:
        assert error(await client.post("/v1/channels", json=body, headers=bearer(at)))[1] == code, body

    # carol is not a member: she cannot add herself, read, or learn the channel exists
    assert error(await client.post(f"/v1/channels/{gid}/members", json={"user_id": carol},
                                   headers=bearer(ct))) == (404, "channel_not_found")
    assert error(await client.get(f"/v1/channels/{gid}/messages", headers=bearer(ct))) == (404, "channel_not_found")

    r = await client.post(f"/v1/channels/{gid}/members", json={"user_id": carol}, headers=bearer(bt))
    assert r.json() == {"channel_id": gid, "user_id": carol, "changed": True}
    # only the creator removes others; anyone may leave
    assert error(await client.delete(f"/v1/channels/{gid}/members/{alice}", headers=bearer(ct))) == (403, "forbidden")
    assert (await client.delete(f"/v1/channels/{gid}/members/{carol}", headers=bearer(ct))).json()["changed"]
    assert (await client.delete(f"/v1/channels/{gid}/members/{bob}", headers=bearer(at))).json()["changed"]
    direct = d1.json()["channel_id"]
    assert error(await client.post(f"/v1/channels/{direct}/members", json={"user_id": carol},
                                   headers=bearer(at))) == (409, "direct_channel")

    mine = (await client.get("/v1/me/channels", headers=bearer(at))).json()["channels"]
    assert {c["channel_id"] for c in mine} == {gid, direct}
    bobs = (await client.get("/v1/me/channels", headers=bearer(bt))).json()["channels"]
    assert [c["channel_id"] for c in bobs] == [direct]


async def test_history_paging_by_seq(ctx) -> None:  # type: ignore[no-untyped-def]
    client, store = ctx.client, ctx.store
    alice, at = await user(client, "alice")
    gid = (await client.post("/v1/channels", json={"kind": "group", "members": []}, headers=bearer(at))).json()[
        "channel_id"]
    await store.append([StoredMessage(2**62 + s, gid, s, 1, alice, "phone", f"c{s}", 1_800_000_000_000 + s, "text",
                                      f"m{s}") for s in range(1, 31)])
    h = (await client.get(f"/v1/channels/{gid}/messages?limit=10", headers=bearer(at))).json()
    assert [m["seq"] for m in h["messages"]] == list(range(21, 31))
    assert (h["epoch"], h["last_seq"], h["has_more"]) == (1, 30, True)
    assert h["messages"][0]["id"] == str(2**62 + 21)  # ids are strings: JSON numbers lose precision
    # the very payload a subscriber of ch/{channel} receives for that message, key for key
    stored = (await store.history(gid, after=20, limit=1)).messages[0]
    sent = msgspec.json.decode(msgspec.json.encode(stored.to_wire()))
    # the payload key for key, then the message's folded state
    assert list(h["messages"][0].items())[:-1] == list(sent.items())
    assert h["messages"][0]["state"] == {"body": "m21", "edited_ts": None, "deleted": False, "pinned": False,
                                         "reactions": [], "reply_count": 0, "last_reply_ts": None}
    older = (await client.get(f"/v1/channels/{gid}/messages?before=21&limit=10", headers=bearer(at))).json()
    assert [m["seq"] for m in older["messages"]] == list(range(11, 21))
    newer = (await client.get(f"/v1/channels/{gid}/messages?after=25", headers=bearer(at))).json()
    assert [m["seq"] for m in newer["messages"]] == list(range(26, 31))
    assert not newer["has_more"]
    for query in ("limit=0", "limit=201", "before=0", "after=-1", "limit=abc"):
        r = await client.get(f"/v1/channels/{gid}/messages?{query}", headers=bearer(at))
        assert error(r) == (422, "invalid_request"), query


async def test_openapi_document_lists_the_contract(ctx) -> None:  # type: ignore[no-untyped-def]
    client = ctx.client
    doc = (await client.get("/openapi.json")).json()
    assert {"/v1/users", "/v1/login", "/v1/channels", "/v1/channels/{channel_id}/members",
            "/v1/channels/{channel_id}/members/{user_id}", "/v1/me/channels",
            "/v1/channels/{channel_id}/messages"} <= set(doc["paths"])
    # A message in a response is the ch/{channel} payload itself: one definition, mqchat.schema's.
    message = doc["components"]["schemas"]["MessageOut"]
    names = [f.name for f in msgspec.structs.fields(ChannelMessage)]
    assert list(message["properties"]) == names
    assert message["required"] == names  # every field is always sent, v included
    assert message["properties"]["id"]["type"] == "string"
    history = doc["paths"]["/v1/channels/{channel_id}/messages"]["get"]["responses"]["200"]["content"]
    assert history["application/json"]["schema"] == {"$ref": "#/components/schemas/HistoryOut"}
    assert doc["components"]["schemas"]["HistoryOut"]["properties"]["messages"]["items"] == {
        "$ref": "#/components/schemas/HistoryMessageOut"}
    # History adds the folded state to the payload, field for field mqchat.schema's HistoryMessage.
    rich = doc["components"]["schemas"]["HistoryMessageOut"]
    assert list(rich["properties"]) == [*names, "state"]
    assert "MessageStateOut" in doc["components"]["schemas"]


async def test_unknown_route_uses_the_error_shape(ctx) -> None:  # type: ignore[no-untyped-def]
    client = ctx.client
    assert error(await client.get("/v1/nope")) == (404, "not_found")
