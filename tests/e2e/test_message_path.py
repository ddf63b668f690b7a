"""The core message path with real processes: ``mqchat up`` on free ports, real MQTT clients."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import Any

import pytest

from harness.client import Api, Device
from mqchat import schema, topics
from tests.conftest import System
from tests.e2e.conftest import World, make_world, stored_rows
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.topologies]

#: Why the broker-enforcement tests run on the embedded topology only.
NO_BROKER_ACL = ("the broker's own enforcement (topic ACL, membership on delivery): the tests' Mosquitto is "
                 "anonymous, without an auth plugin; EMQX and VerneMQ enforce it through our hooks "
                 "(test_hooks_parity.py)")


async def test_group_of_four_devices_exchanges_1000_messages_in_one_order(system: System, world: World) -> None:
    db = sqlite3.connect(f"file:{system.data_dir / 'messages.db'}?mode=ro", uri=True)
    sessions = [world.alice_phone, world.alice_tablet, world.bob_phone, world.bob_laptop]
    devices = [Device(s) for s in sessions]
    ack_checked: list[bool] = []

    async def send_many(dev: Device, n: int) -> None:
        window = asyncio.Semaphore(20)  # 20 sends in flight per device

        async def one(i: int) -> None:
            async with window:
                ack = await dev.send(world.channel, f"{dev.session.device_id}:{dev.user_id}:{i}")
            assert ack.ok, ack
            # The ack promises durability: the row must already be in the store when it arrives.
            row = db.execute("SELECT cmid FROM messages WHERE channel_id=? AND seq=?",
                             (world.channel, ack.seq)).fetchone()
            ack_checked.append(row == (ack.cmid,))

        await asyncio.gather(*(one(i) for i in range(n)))

    for d in devices:
        await d.__aenter__()
    try:
        for d in devices:
            await d.join(world.channel)
        await asyncio.gather(*(send_many(d, 250) for d in devices))
        await wait_for(lambda: all(len(d.received[world.channel]) >= 1000 for d in devices))
        await asyncio.sleep(0.5)  # a window for anything extra (a duplicate) to arrive: nothing must
    finally:
        for d in devices:
            await d.__aexit__(None)
        db.close()

    assert len(ack_checked) == 1000
    assert all(ack_checked)
    orders = [[(m.seq, m.id) for m in d.received[world.channel]] for d in devices]
    assert all(o == orders[0] for o in orders), "devices saw different orders"
    assert [seq for seq, _ in orders[0]] == list(range(1, 1001)), "seq not gap-free from 1"
    assert len({mid for _, mid in orders[0]}) == 1000
    rows = stored_rows(system.data_dir, world.channel)
    assert [r[0] for r in rows] == list(range(1, 1001))
    # Sender identity comes from the topic: each body names the device that sent it.
    for m in devices[0].received[world.channel]:
        dev, user, _ = m.body.split(":")
        assert (m.device, m.sender) == (dev, user)


async def test_retried_cmid_is_stored_once_and_acked_with_the_same_seq(system: System, world: World) -> None:
    async with Device(world.alice_phone) as alice, Device(world.bob_phone) as bob:
        await bob.join(world.channel)
        first = await alice.send(world.channel, "once", cmid="retry-me")
        again = await alice.send(world.channel, "once", cmid="retry-me")
        third = await alice.send(world.channel, "changed body, same cmid", cmid="retry-me")
        after = await alice.send(world.channel, "next")
        await wait_for(lambda: len(bob.received[world.channel]) >= 2)
        await asyncio.sleep(0.3)  # a window for a third delivery (the retried cmid again): none must come
    assert first.ok
    assert again.ok
    assert third.ok
    assert (first.id, first.seq) == (again.id, again.seq) == (third.id, third.seq) == (first.id, 1)
    assert after.seq == 2
    assert [m.body for m in bob.received[world.channel]] == ["once", "next"]
    assert [r[4] for r in stored_rows(system.data_dir, world.channel)] == ["once", "next"]


#: Every payload refusal of the send path, with its stable code (docs/protocol.md).
BAD_PAYLOADS: list[tuple[bytes, str]] = [
    (b"x" * (schema.MAX_PAYLOAD_BYTES + 1), "payload_too_large"),
    (b"{not json", "malformed"),
    (b'["cmid", "kind"]', "malformed"),
    (b'{"cmid": "c1", "kind": "sticker", "body": "hi"}', "unknown_kind"),
    (b'{"cmid": "c1", "kind": "text", "body": "' + b"a" * (schema.MAX_BODY_CHARS + 1) + b'"}', "body_too_long"),
    (b'{"cmid": "c1", "kind": "text", "body": "hi", "sender": "someone-else"}', "unknown_field"),
    (b'{"cmid": "has space", "kind": "text", "body": "hi"}', "invalid_cmid"),
    (b'{"cmid": "c1", "kind": "text", "body": 5}', "malformed"),
    (b'{"cmid": "c1", "kind": "text", "body": "hi", "v": 2}', "unsupported_version"),
    (b'\xff\xfe{"cmid": "c1"}', "malformed"),
]


async def test_bad_payload_gets_error_ack_and_bridge_keeps_running(system: System, world: World) -> None:
    """Each bad payload in turn, on one running system: its error ack, then the next one is still
    handled; afterwards a good send is the channel's first message and the only one stored."""
    async with Device(world.alice_phone) as alice:
        for payload, code in BAD_PAYLOADS:
            ack = await alice.send_payload(world.channel, schema.salvage_cmid(payload) or "", payload, retries=0)
            assert not ack.ok, code
            assert ack.error is not None, code
            assert ack.error.code == code, (payload[:60], ack.error)
            assert ack.channel == world.channel, code
        good = await alice.send(world.channel, "still works")
    assert good.ok
    assert good.seq == 1
    assert [r[4] for r in stored_rows(system.data_dir, world.channel)] == ["still works"]


async def test_non_member_send_gets_not_member_and_nothing_is_stored(system: System, world: World) -> None:
    async with Device(world.carol_phone) as carol:
        ack = await carol.send(world.channel, "let me in", retries=0)
    assert not ack.ok
    assert ack.error is not None
    assert ack.error.code == "not_member"
    assert stored_rows(system.data_dir, world.channel) == []


@pytest.mark.embedded_only(NO_BROKER_ACL)
async def test_forged_sender_topic_is_dropped_by_the_broker(system: System, world: World) -> None:
    async with Device(world.carol_phone) as carol, Device(world.bob_phone) as bob:
        await bob.join(world.channel)
        # Carol publishes on alice's send topic: the ACL drops it; nobody sees it, nothing is stored.
        forged = topics.send(world.alice, "phone", world.channel)
        await carol.publish_raw(forged, schema.encode(schema.SendRequest(cmid="forged", kind="text", body="hi")))
        ok = await Device.send(bob, world.channel, "real")
        await wait_for(lambda: len(bob.received[world.channel]) >= 1)
        await asyncio.sleep(0.5)  # a window for the forged message to arrive too: it must not
    assert ok.ok
    assert ok.seq == 1
    assert [m.body for m in bob.received[world.channel]] == ["real"]
    assert [r[3] for r in stored_rows(system.data_dir, world.channel)] != ["forged"]
    assert all(r[3] != "forged" for r in stored_rows(system.data_dir, world.channel))


def granted(result: Sequence[Any]) -> list[int]:
    """SUBACK return codes as ints (paho gives ReasonCode objects or ints depending on version)."""
    return [r if isinstance(r, int) else int(r.value) for r in result]


@pytest.mark.embedded_only(NO_BROKER_ACL)
async def test_refused_subscriptions(system: System, world: World) -> None:
    other = await world.api.create_channel(world.carol_phone.token, "direct", [world.bob])
    async with Device(world.alice_phone) as alice:
        for topic_filter in (topics.stream(other), "#", "$SYS/#", "ch/+", "in/+/+/+",
                             topics.ack(world.bob, "phone"), topics.user_events(world.bob),
                             f"presence/{world.carol}"):
            result = await alice.client.subscribe(topic_filter, qos=1)
            assert granted(result) == [0x80], topic_filter
        assert granted(await alice.client.subscribe(topics.stream(world.channel), qos=1)) == [1]
        # Bob shares a channel with alice, carol does not (checked above).
        assert granted(await alice.client.subscribe(topics.user_presence(world.bob), qos=1)) == [1]


@pytest.mark.embedded_only(NO_BROKER_ACL)
async def test_membership_change_takes_effect_without_reconnect(system: System, world: World) -> None:
    async with Device(world.alice_phone) as alice, Device(world.bob_phone) as bob:
        await bob.join(world.channel)
        assert (await alice.send(world.channel, "before")).ok
        await wait_for(lambda: len(bob.received[world.channel]) == 1)
        await world.api.remove_member(world.alice_phone.token, world.channel, world.bob)
        await asyncio.sleep(1.5)  # deliberately long for the change's invalidation: nothing to wait on
        assert (await alice.send(world.channel, "after removal")).ok
        refused = await bob.send(world.channel, "can I still talk?", retries=0)
        await asyncio.sleep(0.5)  # a window for "after removal" to reach bob: it must not
        assert [m.body for m in bob.received[world.channel]] == ["before"]
        assert refused.error is not None
        assert refused.error.code == "not_member"
        await world.api.add_member(world.alice_phone.token, world.channel, world.bob)
        await asyncio.sleep(1.5)  # as above
        assert (await bob.send(world.channel, "back")).ok


async def test_websocket_listener_carries_the_same_protocol(system: System, world: World) -> None:
    import aiomqtt

    s = world.alice_phone
    async with aiomqtt.Client("127.0.0.1", system.ws_port, transport="websockets", websocket_path="/mqtt",
                              identifier=f"{s.user_id}:{s.device_id}", username=s.user_id,
                              password=s.token) as ws:
        await ws.subscribe(topics.ack(s.user_id, s.device_id), qos=1)
        await ws.subscribe(topics.stream(world.channel), qos=1)
        await ws.publish(topics.send(s.user_id, s.device_id, world.channel),
                         schema.encode(schema.SendRequest(cmid="ws1", kind="text", body="over ws")), qos=1)
        seen: dict[str, bytes] = {}
        async with asyncio.timeout(10):
            async for msg in ws.messages:
                seen[msg.topic.value.split("/")[0]] = bytes(msg.payload)
                if len(seen) == 2:
                    break
    assert schema.decode_ack(seen["dev"]).ok
    assert schema.decode_channel_message(seen["ch"]).body == "over ws"


async def test_sigkill_mid_stream_loses_no_acked_message(system_factory) -> None:  # type: ignore[no-untyped-def]
    system: System = system_factory()
    system.start()
    api = Api(system.api)
    world = await make_world(api)
    acked: dict[int, str] = {}

    async def stream_sends(dev: Device) -> None:
        i = 0
        while True:
            ack = await dev.send(world.channel, f"m{i}", retries=0)
            acked[ack.seq or -1] = ack.cmid or ""
            i += 1

    dev = Device(world.alice_phone, ack_timeout_s=2)
    await dev.__aenter__()
    task = asyncio.create_task(stream_sends(dev))
    await wait_for(lambda: len(acked) >= 200)
    system.kill()  # SIGKILL to supervisor, broker, bridge and API at once
    with pytest.raises(Exception):  # noqa: B017,PT011 - the connection dies in whatever way it dies
        await asyncio.wait_for(task, 10)
    await dev.__aexit__(None)
    await api.aclose()

    system.start()
    api = Api(system.api)
    try:
        history = stored_rows(system.data_dir, world.channel)
        stored = {seq: cmid for seq, _, _, cmid, _ in history}
        assert acked.items() <= stored.items(), "an acked message is missing after the crash"
        assert [r[0] for r in history] == list(range(1, len(history) + 1))
        session = await api.login("alice", "correct horse battery", "phone")
        async with Device(session) as alice:
            ack = await alice.send(world.channel, "after restart", cmid="after-restart")
            # A cmid from before the crash is still recognised: the dedup survives restarts.
            replay = await alice.send(world.channel, "m0", cmid=stored[1])
        assert ack.seq == len(history) + 1
        assert replay.seq == 1
    finally:
        await api.aclose()
        assert system.stop() == 0
