"""Read markers across devices and resume after a long absence, end to end."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiomqtt
import pytest

from harness.client import Device
from mqchat import topics
from tests.conftest import System
from tests.e2e.conftest import World
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.topologies]


async def test_read_marker_reaches_the_other_device_and_badge_matches_the_formula(
    system: System, world: World
) -> None:
    api = world.api
    t = world.alice_tablet
    events: list[dict[str, Any]] = []
    async with aiomqtt.Client("127.0.0.1", system.mqtt_port, identifier=f"{t.user_id}:{t.device_id}",
                              username=t.user_id, password=t.token) as tablet:
        await tablet.subscribe(topics.user_events(world.alice), qos=1)

        async def read_events() -> None:
            async for msg in tablet.messages:
                events.append(json.loads(bytes(msg.payload)))

        reader = asyncio.create_task(read_events())
        async with Device(world.bob_phone) as bob, Device(world.alice_phone) as alice:
            # bob sends while alice's phone marks read concurrently
            async def bob_sends() -> None:
                for i in range(60):
                    assert (await bob.send(world.channel, f"b{i}")).ok

            async def alice_reads() -> None:
                for _ in range(10):
                    page = await api.history(world.alice_phone.token, world.channel, limit=1)
                    if page["last_seq"]:
                        await api._call("POST", f"/v1/channels/{world.channel}/read", world.alice_phone.token,
                                        json={"seq": page["last_seq"]})
                    await asyncio.sleep(0.02)

            await asyncio.gather(bob_sends(), alice_reads())
            await asyncio.sleep(0.5)
            last_marker = await api._call("POST", f"/v1/channels/{world.channel}/read", world.alice_phone.token,
                                          json={"seq": 40})
            assert (await alice.send(world.channel, "mine")).ok  # seq 61: own message, moves the marker
        await wait_for(lambda: any(e["type"] == "read" and e["seq"] == last_marker["seq"] for e in events), 10,
                       what="the last read event on the tablet")
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)

    reads = [e for e in events if e["type"] == "read"]
    assert reads, "the tablet saw no read event"
    assert [e["seq"] for e in reads] == sorted(e["seq"] for e in reads)  # never backwards
    assert reads[-1]["seq"] == last_marker["seq"] >= 40
    history = await api.history(world.alice_phone.token, world.channel, limit=1)
    assert history["last_seq"] == 61
    inbox = await api._call("GET", "/v1/me/inbox", world.alice_tablet.token)
    entry = next(c for c in inbox["channels"] if c["channel_id"] == world.channel)
    # 61 messages, alice's own last one moved her marker to 61: nothing unread.
    assert (entry["read_seq"], entry["unread"], inbox["badge"]) == (61, 0, 0)
    bob_inbox = await api._call("GET", "/v1/me/inbox", world.bob_phone.token)
    assert bob_inbox["badge"] == 1  # alice's message, for bob
    assert bob_inbox["badge"] == sum(c["last_seq"] - c["read_seq"] for c in bob_inbox["channels"])


async def test_device_offline_during_5000_messages_resumes_with_one_sync_call(system: System, world: World) -> None:
    api = world.api
    channels = [world.channel]
    for name in ("two", "three"):
        channels.append(await api.create_channel(world.alice_phone.token, "group", [world.bob], name=name))

    # bob's laptop has seen the first 10 messages of each channel, then goes offline
    async with Device(world.alice_phone) as alice:
        for ch in channels:
            for i in range(10):
                assert (await alice.send(ch, f"{ch}:{i}")).ok
    cursors = [{"channel": ch, "epoch": 1, "last_seq": 10} for ch in channels]

    # 5,000 messages while it is away, from two senders
    per_channel = {channels[0]: 2000, channels[1]: 1700, channels[2]: 1300}
    async with Device(world.alice_phone) as alice, Device(world.bob_phone) as bob:
        async def send(dev: Device, ch: str, n: int, tag: str) -> None:
            window = asyncio.Semaphore(25)

            async def one(i: int) -> None:
                async with window:
                    assert (await dev.send(ch, f"{tag}{i}")).ok

            await asyncio.gather(*(one(i) for i in range(n)))

        await asyncio.gather(*(send(alice if k % 2 == 0 else bob, ch, n // 2, f"{k}a") for k, (ch, n)
                               in enumerate(per_channel.items())),
                             *(send(bob if k % 2 == 0 else alice, ch, n - n // 2, f"{k}b") for k, (ch, n)
                               in enumerate(per_channel.items())))

    result = await api._call("POST", "/v1/sync", world.bob_laptop.token, json={"channels": cursors, "limit": 2000})
    by = {c["channel"]: c for c in result["channels"]}
    assert set(by) == set(channels)
    for ch, n in per_channel.items():
        got = by[ch]
        assert got["status"] == "ok"
        assert got["has_more"] is False
        seqs = [m["seq"] for m in got["messages"]]
        assert seqs == list(range(11, 11 + n)), ch  # exactly what was missed, in order, no duplicates
        full = await api.history(world.bob_laptop.token, ch, after=10, limit=200)
        assert [m["id"] for m in got["messages"][:200]] == [m["id"] for m in full["messages"]]
    assert result["removed"] == []
