"""Presence on any broker: the same scenarios, with the same observable results, on the embedded
broker (its plugin writes the leases) and on Mosquitto (the workers' ingester writes them from the
devices' status publishes, heartbeats and wills).

Each test runs ``mqchat up`` with a short presence lease on both topologies (tests/conftest.py):
``[embedded]`` on a private redis-server, ``[production]`` with ``--broker`` on Mosquitto, two
bridges, two workers instances and a Redis Cluster; and watches ``presence/{alice}`` over MQTT as a
contact would.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from harness.client import Api, Device, Session
from harness.mosquitto import Mosquitto
from harness.processes import NotInstalled
from mqchat import topics
from mqchat.mqtt import codec
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.redis_state import RedisState
from tests.conftest import RedisServer, System, children_of
from tests.e2e.conftest import World, make_world
from tests.e2e.test_presence import PresenceWatcher
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.topologies]

#: Short enough for the crash test, long enough that a will (1.5 keep-alives of 2 s) beats it:
#: Mosquitto 2.0 checks keep-alives only every few seconds (a 2 s keep-alive expires after 5-6 s).
LEASE_MS = 10_000


def start(kind: str, tmp_path: Path, redis_server: RedisServer, env: dict[str, str] | None = None) -> System:
    env = {"MQCHAT_REDIS__URL": redis_server.url, "MQCHAT_BROKER__PRESENCE_LEASE_MS": str(LEASE_MS),
           "MQCHAT_RATELIMIT__ENABLED": "false"} | (env or {})
    if kind == "mosquitto":
        try:
            broker = Mosquitto(tmp_path).start()
        except NotInstalled as exc:
            pytest.skip(str(exc))
        system = System.on_free_ports(tmp_path, broker_port=broker.port, env=env)
        system.mosquitto = broker
    else:
        system = System.on_free_ports(tmp_path, env=env)
    try:
        system.start()
    except BaseException:
        stop(system)
        raise
    return system


def stop(system: System) -> None:
    system.kill()
    if system.mosquitto is not None:
        system.mosquitto.kill()


@pytest.fixture
def any_broker(system_factory: Any, redis_server: RedisServer) -> System:
    """The system on this test's topology (the factory stops it, and its Mosquitto)."""
    system: System = system_factory()
    system.env |= {"MQCHAT_REDIS__URL": redis_server.url, "MQCHAT_BROKER__PRESENCE_LEASE_MS": str(LEASE_MS),
                   "MQCHAT_RATELIMIT__ENABLED": "false"}
    system.start()
    return system


@pytest.fixture
async def world(any_broker: System) -> AsyncIterator[World]:
    api = Api(any_broker.api)
    yield await make_world(api)
    await api.aclose()


@pytest.fixture
async def watcher(any_broker: System, world: World) -> AsyncIterator[PresenceWatcher]:
    s = world.bob_laptop
    async with aiomqtt.Client("127.0.0.1", any_broker.mqtt_port, identifier=f"{s.user_id}:{s.device_id}",
                              username=s.user_id, password=s.token) as client:
        w = PresenceWatcher(client)
        await w.watch(world.alice)
        yield w
        await w.close()


@pytest.fixture
async def state(redis_server: RedisServer) -> AsyncIterator[RedisState]:
    redis = RedisClient.from_url(redis_server.url)
    yield RedisState(redis)
    await redis.close()


def raw_device(port: int, s: Session, *, keepalive: int) -> socket.socket:
    """A device on a bare socket, as the protocol asks: a will naming its connection, then ``online``."""
    conn = "raw" + os.urandom(4).hex()
    topic = topics.device_presence(s.user_id, s.device_id)
    sock = socket.create_connection(("127.0.0.1", port))
    will = (topic, json.dumps({"status": "offline", "ts": 0, "conn": conn}).encode(), 1, True)
    sock.sendall(codec.encode_connect(f"{s.user_id}:{s.device_id}", username=s.user_id, password=s.token,
                                      keepalive=keepalive, will=will))
    assert sock.recv(4) == b"\x20\x02\x00\x00"
    online = json.dumps({"status": "online", "ts": int(time.time() * 1000), "conn": conn}).encode()
    sock.sendall(codec.encode_publish(codec.encode_string(topic), online, qos=0, retain=True))
    return sock


async def test_clean_disconnect(any_broker: System, world: World, watcher: PresenceWatcher) -> None:
    async with Device(world.alice_phone):
        await watcher.wait_for(world.alice, "online", within=5)
    assert await watcher.wait_for(world.alice, "offline", within=5) < 2.0


async def test_one_lease_per_connection_written_by_one_path(any_broker: System, world: World,
                                                            watcher: PresenceWatcher,
                                                            redis_server: RedisServer) -> None:
    """The embedded broker's plugin and the ingester never both write: one lease for one connection,
    named by the broker (embedded) or by the device's ``conn`` (Mosquitto)."""
    redis = RedisClient.from_url(redis_server.url)
    try:
        async with Device(world.alice_phone) as phone:
            await watcher.wait_for(world.alice, "online", within=5)
            members = [m.decode() if isinstance(m, bytes) else m
                       for m in await redis.driver.hkeys(redis.keys.conns(world.alice))]
            assert len(members) == 1
            assert members[0].startswith("phone|")
            own = members[0] == f"phone|{phone._conn}"
            assert own is (any_broker.mosquitto is not None)
    finally:
        await redis.close()


async def test_a_reconnect_is_not_ended_by_the_old_connections_will(any_broker: System, world: World,
                                                                    watcher: PresenceWatcher,
                                                                    state: RedisState) -> None:
    old = raw_device(any_broker.mqtt_port, world.alice_phone, keepalive=30)
    await watcher.wait_for(world.alice, "online", within=5)
    async with Device(world.alice_phone):  # same client id: the broker takes the session over and
        old.close()                        # the old connection's will comes after the new CONNECT
        await asyncio.sleep(1.0)  # a window for a wrong "offline" (the old will) to arrive: none may
        assert (await state.presence_of([world.alice]))[world.alice].status == "online"
        assert watcher.last(world.alice) == "online"
    await watcher.wait_for(world.alice, "offline", within=5)


async def test_lost_connection(any_broker: System, world: World, watcher: PresenceWatcher) -> None:
    with raw_device(any_broker.mqtt_port, world.alice_phone, keepalive=30) as sock:
        await watcher.wait_for(world.alice, "online", within=5)
        sock.shutdown(socket.SHUT_RDWR)  # the network goes away: no DISCONNECT packet
    assert await watcher.wait_for(world.alice, "offline", within=5) < 2.0


async def test_silent_client(any_broker: System, world: World, watcher: PresenceWatcher) -> None:
    keepalive = 2
    with raw_device(any_broker.mqtt_port, world.alice_phone, keepalive=keepalive):
        await watcher.wait_for(world.alice, "online", within=5)
        # Silence: no PINGREQ, no heartbeat, no FIN. The broker drops it after 1.5 keep-alives and
        # publishes its will, before the lease (LEASE_MS) would have ended it.
        took = await watcher.wait_for(world.alice, "offline", within=LEASE_MS / 1000)
    assert 1.5 * keepalive - 0.5 <= took < LEASE_MS / 1000


def kill_broker(system: System) -> None:
    """SIGKILL the broker: no wills, no disconnect hooks. The embedded one is replaced by ``mqchat up``'s
    supervisor; Mosquitto is started again on its port at once."""
    if system.mosquitto is not None:
        system.mosquitto.kill()
        system.mosquitto.start()
        return
    assert system.proc is not None
    for pid in children_of(system.proc.pid):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"broker" in cmdline:
            os.killpg(pid, signal.SIGKILL)
            return
    raise AssertionError("no broker process found")


async def test_crashed_broker(any_broker: System, world: World, state: RedisState) -> None:
    async def alice_is(status: str) -> bool:
        return (await state.presence_of([world.alice]))[world.alice].status == status

    device = Device(world.alice_phone)
    await device.__aenter__()
    try:
        await wait_for(lambda: alice_is("online"), 5, what="alice online")
        await asyncio.sleep(LEASE_MS / 1000 * 1.2)  # past a lease: heartbeats (or the broker) keep it
        assert await alice_is("online")
        kill_broker(any_broker)
        killed = time.monotonic()
        await wait_for(lambda: alice_is("offline"), LEASE_MS / 1000 + 4, what="alice offline")
        assert time.monotonic() - killed <= LEASE_MS / 1000 + 3  # the lease, the sweep interval and slack
    finally:
        await device.__aexit__(None)
    # The offline aggregate is published (retained) once the workers are back on the broker.
    s = world.bob_laptop

    async def seen_offline() -> bool:
        try:
            async with aiomqtt.Client("127.0.0.1", any_broker.mqtt_port, identifier=f"{s.user_id}:{s.device_id}",
                                      username=s.user_id, password=s.token) as client:
                w = PresenceWatcher(client)
                await w.watch(world.alice)
                try:
                    await w.wait_for(world.alice, "offline", within=2)
                    return True
                except AssertionError:
                    return False
                finally:
                    await w.close()
        except aiomqtt.MqttError:
            return False  # the replacement broker is not up yet

    await wait_for(seen_offline, 30, what="retained offline on the replacement broker")


# --- push decisions read the presence the ingester writes -------------------------------------------


async def test_an_online_user_on_mosquitto_gets_no_push(tmp_path: Path, redis_server: RedisServer,
                                                        fcm_standin: Any, apns_standin: Any) -> None:
    from tests.e2e.test_push import drained, enqueued_then_drained, jobs_added, push_env, register

    system = start("mosquitto", tmp_path, redis_server, push_env(redis_server, fcm_standin, apns_standin))
    api = Api(system.api)
    redis = RedisClient.from_url(redis_server.url)
    state, r = RedisState(redis), redis.driver
    try:
        w = await make_world(api)
        await api.add_member(w.alice_phone.token, w.channel, w.carol)
        bob_token, carol_token = "bob-fcm-" + "b" * 150, "carol-fcm-" + "c" * 150
        await register(api, w.bob_phone.token, {"platform": "fcm", "token": bob_token})
        await register(api, w.carol_phone.token, {"platform": "fcm", "token": carol_token})
        async with Device(w.alice_phone) as alice, Device(w.bob_phone):
            async def presence() -> bool:
                seen = await state.presence_of([w.alice, w.bob, w.carol])
                return [seen[u].status for u in (w.alice, w.bob, w.carol)] == ["online", "online", "offline"]

            await wait_for(presence, 10, what="alice and bob online, carol offline")
            before = await jobs_added(r)
            assert (await alice.send(w.channel, "who gets a push?")).ok
            await enqueued_then_drained(r, before)
            await wait_for(lambda: bool(fcm_standin.recorder.for_token(carol_token)), 10, what="carol's push")
            await drained(r)
        assert fcm_standin.recorder.for_token(bob_token) == []  # online on Mosquitto: no push
        assert [p.token for p in fcm_standin.recorder.received] == [carol_token]
    finally:
        await redis.close()
        await api.aclose()
        stop(system)
