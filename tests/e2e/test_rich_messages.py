"""Rich messages with real processes: every event kind through the bridge, concurrent reactions,
an edit and delete racing a resume, the delete's erasure in the store, and the REST send."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from collections.abc import Iterable
from typing import Any

import httpx
import msgspec
import pytest

from harness.client import Device
from mqchat import fold, schema
from tests.conftest import System
from tests.e2e.conftest import World
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


async def event(dev: Device, channel: str, **fields: Any) -> schema.Ack:
    cmid = dev.next_cmid()
    return await dev.send_payload(channel, cmid, schema.encode(schema.SendRequest(cmid=cmid, **fields)))


def code(ack: schema.Ack) -> str:
    return ack.error.code if ack.error else "ok"


async def history(system: System, token: str, channel: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=system.api, timeout=30) as http:
        r = await http.get(f"/v1/channels/{channel}/messages", params={"limit": 200},
                           headers={"Authorization": f"Bearer {token}"})
    r.raise_for_status()
    messages: list[dict[str, Any]] = r.json()["messages"]
    return messages


def folded_as(events: Iterable[schema.ChannelMessage], me: str) -> dict[int, dict[str, Any]]:
    """What a device shows, from the events it holds: the fold, as history would render it."""
    by_seq = {m.seq: m for m in events}  # a device drops duplicates by seq
    state = fold.fold(by_seq[s] for s in sorted(by_seq))
    return {seq: msgspec.to_builtins(m.out(me)) for seq, m in state.messages.items()}


def history_states(rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {r["seq"]: r["state"] for r in rows if r["state"] is not None}


def db_rows(system: System, channel: str) -> list[tuple[int, str, str]]:
    with sqlite3.connect(f"file:{system.data_dir / 'messages.db'}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT seq, kind, body FROM messages WHERE channel_id=? ORDER BY seq",
                            (channel,)).fetchall()


async def test_every_event_kind_and_every_refusal(system: System, world: World) -> None:
    ch = world.channel
    secret = f"secret-{secrets.token_hex(4)}"
    async with Device(world.alice_phone) as alice, Device(world.bob_phone) as bob:
        await alice.join(ch)
        await bob.join(ch)
        assert (await alice.send(ch, "root")).seq == 1
        assert (await event(bob, ch, kind="text", body=secret, thread=1, reply_to=1)).seq == 2
        assert (await event(alice, ch, kind="edit", target=1, body="root, edited")).seq == 3
        assert (await event(bob, ch, kind="reaction", target=1, emoji="👍", op="add")).seq == 4
        assert (await event(alice, ch, kind="pin", target=1)).seq == 5
        assert (await event(bob, ch, kind="edit", target=2, body=f"{secret} edited")).seq == 6
        assert (await event(bob, ch, kind="delete", target=2)).seq == 7
        refused = [
            await event(bob, ch, kind="edit", target=1, body="not mine"),
            await event(bob, ch, kind="delete", target=1),
            await event(alice, ch, kind="reaction", target=2, emoji="👍", op="add"),
            await event(alice, ch, kind="pin", target=99),
            await event(alice, ch, kind="text", body="x", thread=2),
            await alice.send_payload(ch, "bad-emoji", b'{"cmid": "bad-emoji", "kind": "reaction", "target": 1, '
                                                      b'"emoji": "nope", "op": "add"}'),
            await alice.send_payload(ch, "no-target", b'{"cmid": "no-target", "kind": "delete"}'),
        ]
        assert [code(a) for a in refused] == ["forbidden", "forbidden", "target_deleted", "not_found",
                                              "target_deleted", "invalid_emoji", "missing_field"]
        await wait_for(lambda: len(bob.received[ch]) >= 7 and len(alice.received[ch]) >= 7)
        rows = await history(system, world.bob_phone.token, ch)
    # Nothing refused was stored; the stream carried each event with its fields.
    assert [r["seq"] for r in rows] == list(range(1, 8))
    assert [(m.kind, m.target) for m in bob.received[ch]] == [
        ("text", None), ("text", None), ("edit", 1), ("reaction", 1), ("pin", 1), ("edit", 2), ("delete", 2)]
    assert (bob.received[ch][1].thread, bob.received[ch][1].reply_to) == (1, 1)
    # Every device's fold is what history returns.
    assert folded_as(bob.received[ch], world.bob) == history_states(rows)
    assert folded_as(alice.received[ch], world.bob) == history_states(rows)
    root = rows[0]["state"]
    assert (root["body"], root["pinned"], root["reply_count"]) == ("root, edited", True, 1)
    assert root["reactions"] == [{"emoji": "👍", "count": 1, "me": True}]
    assert rows[1]["state"]["deleted"]
    # The delete erased the words from the store: the message and its edit, read from the file.
    stored = db_rows(system, ch)
    assert [(seq, body) for seq, _, body in stored if seq in (2, 6)] == [(2, ""), (6, "")]
    assert not any(secret in body for _, _, body in stored)
    assert not any(secret in str(r) for r in rows)
    # Unread counts the two texts only; bob's own reply moved his marker past the first.
    async with httpx.AsyncClient(base_url=system.api, timeout=30) as http:
        inbox = (await http.get("/v1/me/inbox", headers={"Authorization": f"Bearer {world.bob_phone.token}"})).json()
        carol_view = await http.get(f"/v1/channels/{ch}/threads/1",
                                    headers={"Authorization": f"Bearer {world.carol_phone.token}"})
    assert (inbox["channels"][0]["last_seq"], inbox["channels"][0]["unread"]) == (7, 0)
    assert carol_view.status_code == 404  # not a member: the channel does not exist for her


async def test_two_devices_react_and_unreact_concurrently(system: System, world: World) -> None:
    ch = world.channel
    async with Device(world.alice_phone) as alice, Device(world.bob_phone) as bob:
        await alice.join(ch)
        await bob.join(ch)
        await alice.send(ch, "react to me")

        async def storm(dev: Device, rounds: int, last: str) -> None:
            for i in range(rounds):
                for emoji in ("👍", "🎉"):
                    op = "add" if i % 2 == 0 else "remove"
                    if i == rounds - 1:
                        op = last if emoji == "👍" else "add"
                    ack = await event(dev, ch, kind="reaction", target=1, emoji=emoji, op=op)
                    assert ack.ok, ack

        await asyncio.gather(storm(alice, 15, "add"), storm(bob, 16, "remove"))
        total = 1 + 2 * 15 + 2 * 16
        await wait_for(lambda: len(alice.received[ch]) >= total and len(bob.received[ch]) >= total)
        rows = await history(system, world.alice_phone.token, ch)
    reactions = rows[0]["state"]["reactions"]
    assert sorted((r["emoji"], r["count"], r["me"]) for r in reactions) == [("🎉", 2, True), ("👍", 1, True)]
    assert folded_as(bob.received[ch], world.alice) == history_states(rows)
    assert folded_as(alice.received[ch], world.alice) == history_states(rows)


@pytest.mark.topologies  # a resume: on the production topology too (tests/conftest.py)
async def test_edit_and_delete_racing_a_resume(system: System, world: World) -> None:
    """bob's laptop goes away, alice edits and deletes while it reconnects and syncs: the laptop
    ends on the state of bob's phone (online all along) and of history."""
    ch = world.channel
    async with Device(world.alice_phone) as alice, Device(world.bob_phone) as phone:
        await phone.join(ch)
        async with Device(world.bob_laptop) as laptop:
            await laptop.join(ch)
            for i in range(5):
                await alice.send(ch, f"m{i}")
            await event(alice, ch, kind="reaction", target=1, emoji="👍", op="add")
            await wait_for(lambda: len(laptop.received[ch]) >= 6)
        held = list(laptop.received[ch])
        last_seq = max(m.seq for m in held)

        async def changes() -> None:
            for seq in range(1, 6):
                await event(alice, ch, kind="edit", target=seq, body=f"m{seq - 1} v2")
                if seq % 2:
                    await event(alice, ch, kind="delete", target=seq)

        async def resume() -> list[schema.ChannelMessage]:
            async with Device(world.bob_laptop) as again:
                await again.join(ch)  # live first, then the gap: nothing falls between
                async with httpx.AsyncClient(base_url=system.api, timeout=30) as http:
                    r = await http.post("/v1/sync", json={"channels": [{"channel": ch, "epoch": 1,
                                                                        "last_seq": last_seq}]},
                                        headers={"Authorization": f"Bearer {world.bob_laptop.token}"})
                r.raise_for_status()
                synced = [msgspec.convert({k: v for k, v in m.items() if k != "state"},
                                                 schema.ChannelMessage)
                          for c in r.json()["channels"] for m in c["messages"]]
                await task
                end = (await history(system, world.bob_laptop.token, ch))[-1]["seq"]
                await wait_for(lambda: max((m.seq for m in [*synced, *again.received[ch]]), default=0) >= end)
                return [*synced, *again.received[ch]]

        task = asyncio.create_task(changes())
        resumed = await resume()
        await wait_for(lambda: len(phone.received[ch]) >= 14)
        rows = await history(system, world.bob_laptop.token, ch)
    laptop_view = folded_as([*held, *resumed], world.bob)
    assert sorted({m.seq for m in [*held, *resumed]}) == list(range(1, len(rows) + 1))  # gap-free
    assert laptop_view == folded_as(phone.received[ch], world.bob) == history_states(rows)
    assert [laptop_view[s]["deleted"] for s in range(1, 6)] == [True, False, True, False, True]


async def test_rest_send_takes_the_bridge_path(system: System, world: World) -> None:
    ch = world.channel
    alice = {"Authorization": f"Bearer {world.alice_phone.token}"}
    async with Device(world.bob_phone) as bob, httpx.AsyncClient(base_url=system.api, timeout=30) as http:
        await bob.join(ch)
        first = await http.post(f"/v1/channels/{ch}/messages", headers=alice,
                                json={"cmid": "rest-1", "kind": "text", "body": "over http"})
        assert first.status_code == 200, first.text
        ack = first.json()
        assert (ack["ok"], ack["cmid"], ack["seq"], ack["channel"]) == (True, "rest-1", 1, ch)
        again = await http.post(f"/v1/channels/{ch}/messages", headers=alice,
                                json={"cmid": "rest-1", "kind": "text", "body": "over http"})
        assert (again.json()["id"], again.json()["seq"]) == (ack["id"], 1)  # idempotent by cmid
        mqtt_ack = await bob.send(ch, "bob over mqtt")
        assert mqtt_ack.seq == 2  # one order for both paths
        edit = await http.post(f"/v1/channels/{ch}/messages", headers=alice,
                               json={"cmid": "rest-2", "kind": "reaction", "target": 2, "emoji": "🎉", "op": "add"})
        assert edit.json()["seq"] == 3

        async def refused(headers: dict[str, str], body: Any) -> tuple[int, str]:
            r = await http.post(f"/v1/channels/{ch}/messages", headers=headers,
                                **({"content": body} if isinstance(body, bytes) else {"json": body}))
            return r.status_code, r.json()["error"]["code"]

        carol = {"Authorization": f"Bearer {world.carol_phone.token}"}
        assert await refused(alice, {"cmid": "r3", "kind": "edit", "target": 2, "body": "x"}) == (403, "forbidden")
        assert await refused(alice, {"cmid": "r4", "kind": "delete", "target": 50}) == (404, "not_found")
        assert await refused(alice, {"cmid": "r5", "kind": "text"}) == (422, "missing_field")
        assert await refused(alice, b"{nope") == (422, "malformed")
        assert await refused(carol, {"cmid": "r6", "kind": "text", "body": "hi"}) == (403, "not_member")
        assert await refused({}, {"cmid": "r7", "kind": "text", "body": "hi"}) == (401, "unauthorized")
        await wait_for(lambda: len(bob.received[ch]) >= 3)
        rows = await history(system, world.alice_phone.token, ch)
    assert [m.cmid for m in bob.received[ch]] == ["rest-1", mqtt_ack.cmid, "rest-2"]
    assert bob.received[ch][0].device == "phone"  # sent as the token's device
    assert len(rows) == 3
