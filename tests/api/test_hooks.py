"""The HTTP auth hooks, called with the request bodies EMQX and VerneMQ send."""

from __future__ import annotations

import time

from mqchat import auth, topics
from tests.api.conftest import HOOK_AUTH, HOOKS_SECRET, Ctx, bearer, user


async def setup(ctx: Ctx) -> tuple[str, str, str, str]:
    c = ctx.client
    alice, at = await user(c, "alice")
    bob, _ = await user(c, "bob")
    await user(c, "carol")
    gid = (await c.post("/v1/channels", json={"kind": "group", "members": [bob]}, headers=bearer(at))).json()[
        "channel_id"]
    token = auth.issue(ctx.keys, user_id=alice, device_id="phone", now=int(time.time()))
    return alice, bob, gid, token


async def test_emqx_authentication(ctx: Ctx) -> None:
    alice, _, _, token = await setup(ctx)
    c = ctx.client

    async def authn(**body: str) -> dict[str, object]:
        r = await c.post("/hooks/emqx/authn", json=body, headers=HOOK_AUTH)
        assert r.status_code == 200
        return dict(r.json())

    assert await authn(clientid=f"{alice}:phone", username=alice, password=token) == {
        "result": "allow", "is_superuser": False}
    service = auth.issue(ctx.keys, user_id="svc-bridge", device_id="b0", role="service", now=int(time.time()))
    assert await authn(clientid="svc-bridge:b0", username="svc-bridge", password=service) == {
        "result": "allow", "is_superuser": True}
    expired = auth.issue(ctx.keys, user_id=alice, device_id="phone", now=int(time.time()) - 7200, ttl_s=60)
    for body in ({"clientid": f"{alice}:tablet", "username": alice, "password": token},
                 {"clientid": f"{alice}:phone", "username": "mallory", "password": token},
                 {"clientid": f"{alice}:phone", "username": alice, "password": expired},
                 {"clientid": f"{alice}:phone", "username": alice, "password": "garbage"},
                 {"clientid": f"{alice}:phone", "username": alice}):
        assert (await authn(**body))["result"] == "deny", body


async def test_emqx_authorization_applies_the_policy(ctx: Ctx) -> None:
    alice, bob, gid, _ = await setup(ctx)
    c = ctx.client
    cases = [
        ("subscribe", topics.stream(gid), "allow"),
        ("subscribe", "ch/c-other", "deny"),
        ("subscribe", "#", "deny"),
        ("subscribe", "$SYS/#", "deny"),
        ("subscribe", topics.ack(alice, "phone"), "allow"),
        ("subscribe", topics.ack(bob, "phone"), "deny"),
        ("subscribe", topics.user_presence(bob), "allow"),
        ("publish", topics.send(alice, "phone", gid), "allow"),
        ("publish", topics.send(bob, "phone", gid), "deny"),
        ("publish", topics.stream(gid), "deny"),
        ("retain", topics.stream(gid), "deny"),
    ]
    for action, topic, expected in cases:
        r = await c.post("/hooks/emqx/authz", json={"clientid": f"{alice}:phone", "username": alice,
                                                     "topic": topic, "action": action, "peerhost": "10.0.0.1"},
                         headers=HOOK_AUTH)
        assert r.json() == {"result": expected}, (action, topic)
    # a client id that does not name the username's user is never trusted
    r = await c.post("/hooks/emqx/authz", json={"clientid": "someone:phone", "username": alice,
                                                 "topic": topics.stream(gid), "action": "subscribe"}, headers=HOOK_AUTH)
    assert r.json() == {"result": "deny"}


async def test_vernemq_webhooks(ctx: Ctx) -> None:
    alice, _, gid, token = await setup(ctx)
    c = ctx.client
    cid = f"{alice}:phone"

    async def hook(name: str, **body: object) -> dict[str, object]:
        # VerneMQ's webhooks cannot send headers: the secret rides in the endpoint's query string.
        r = await c.post(f"/hooks/vernemq?secret={HOOKS_SECRET}", json={"mountpoint": "", **body},
                         headers={"vernemq-hook": name})
        assert r.status_code == 200
        return dict(r.json())

    ok = await hook("auth_on_register", client_id=cid, username=alice, password=token, peer_addr="10.0.0.1",
                    peer_port=5555, clean_session=True)
    assert ok == {"result": "ok"}
    refused = await hook("auth_on_register", client_id=f"{alice}:other", username=alice, password=token)
    assert refused == {"result": {"error": "not_allowed"}}
    subs = await hook("auth_on_subscribe", client_id=cid, username=alice,
                      topics=[{"topic": topics.stream(gid), "qos": 1}, {"topic": "#", "qos": 1},
                              {"topic": topics.ack(alice, "phone"), "qos": 1}])
    assert subs == {"result": "ok", "topics": [{"topic": topics.stream(gid), "qos": 1}, {"topic": "#", "qos": 128},
                                               {"topic": topics.ack(alice, "phone"), "qos": 1}]}
    pub = await hook("auth_on_publish", client_id=cid, username=alice, topic=topics.send(alice, "phone", gid),
                     qos=1, payload="e30=", retain=False)
    assert pub == {"result": "ok"}
    forged = await hook("auth_on_publish", client_id=cid, username=alice, topic=topics.stream(gid), qos=1,
                        payload="e30=", retain=False)
    assert forged == {"result": {"error": "not_allowed"}}
    assert await hook("on_deliver", client_id=cid, username=alice) == {"result": {"error": "not_allowed"}}
