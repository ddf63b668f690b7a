"""History with folded state, threads, pins and unread over events, through the HTTP API.

The events are appended to the store as the bridge would (tests/e2e sends them through the
bridge); what is checked here is what the API makes of them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx

from mqchat.storage.base import StoredMessage
from tests.api.conftest import bearer, error, user


def ev(channel: str, seq: int, sender: str, kind: str, count: int, **fields: Any) -> StoredMessage:
    base = StoredMessage(10_000 + seq, channel, seq, 1, sender, "phone", f"c{seq}", 1_800_000_000_000 + seq, kind, "")
    return replace(base, body=fields.pop("body", ""), count_seq=count, **fields)


async def test_history_threads_pins_and_unread(ctx) -> None:  # type: ignore[no-untyped-def]
    client: httpx.AsyncClient = ctx.client
    alice, at = await user(client, "alice")
    bob, bt = await user(client, "bob")
    gid = (await client.post("/v1/channels", json={"kind": "group", "members": [bob]}, headers=bearer(at))).json()[
        "channel_id"]
    await ctx.store.append([
        ev(gid, 1, alice, "text", 1, body="root"),
        ev(gid, 2, bob, "text", 2, body="reply one", thread=1),
        ev(gid, 3, bob, "text", 3, body="reply two", thread=1),
        ev(gid, 4, alice, "edit", 3, body="root, edited", target=1),
        ev(gid, 5, bob, "reaction", 3, target=1, emoji="👍", op="add"),
        ev(gid, 6, alice, "reaction", 3, target=1, emoji="👍", op="add"),
        ev(gid, 7, alice, "pin", 3, target=1),
        ev(gid, 8, bob, "delete", 3, target=3),
    ])
    h = (await client.get(f"/v1/channels/{gid}/messages", headers=bearer(bt))).json()
    assert [m["seq"] for m in h["messages"]] == list(range(1, 9))
    root = h["messages"][0]
    assert root["body"] == "root"  # the event as it was sent; the state says what it is now
    assert root["state"] == {"body": "root, edited", "edited_ts": 1_800_000_000_004, "deleted": False, "pinned": True,
                             "reactions": [{"emoji": "👍", "count": 2, "me": True}], "reply_count": 2,
                             "last_reply_ts": 1_800_000_000_003}
    gone = h["messages"][2]
    assert (gone["body"], gone["state"]["deleted"], gone["state"]["body"]) == ("", True, "")
    assert all(m["state"] is None for m in h["messages"][3:])  # events that change messages carry none

    t = (await client.get(f"/v1/channels/{gid}/threads/1?limit=1", headers=bearer(at))).json()
    assert (t["root"]["seq"], [r["seq"] for r in t["replies"]], t["has_more"]) == (1, [2], True)
    t2 = (await client.get(f"/v1/channels/{gid}/threads/1?after=2", headers=bearer(at))).json()
    assert ([r["seq"] for r in t2["replies"]], t2["has_more"]) == ([3], False)
    assert t2["replies"][0]["state"]["deleted"]
    assert error(await client.get(f"/v1/channels/{gid}/threads/99", headers=bearer(at))) == (404, "not_found")
    assert error(await client.get(f"/v1/channels/{gid}/threads/4", headers=bearer(at))) == (404, "not_found")

    pins = (await client.get(f"/v1/channels/{gid}/pins", headers=bearer(at))).json()
    assert [m["seq"] for m in pins["messages"]] == [1]

    # Unread counts texts only: 3 texts, of which bob read none -> 3, though the channel is at seq 8.
    inbox = (await client.get("/v1/me/inbox", headers=bearer(bt))).json()
    assert (inbox["channels"][0]["last_seq"], inbox["channels"][0]["unread"], inbox["badge"]) == (8, 3, 3)
    # Read up to the reply (seq 2): one text left, whatever events follow it.
    r = (await client.post(f"/v1/channels/{gid}/read", json={"seq": 2}, headers=bearer(bt))).json()
    assert (r["unread"], r["badge"]) == (1, 1)
    r = (await client.post(f"/v1/channels/{gid}/read", json={"seq": 5}, headers=bearer(bt))).json()
    assert (r["unread"], r["badge"]) == (0, 0)
