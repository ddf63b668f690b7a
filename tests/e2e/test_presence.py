"""Presence end to end: real broker, real Redis, the workers' publisher and sweeper, MQTT clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from harness.client import Device
from mqchat import auth, topics
from mqchat.config import load_settings
from mqchat.mqtt import codec
from mqchat.storage.sqlite import SqliteDirectory, SqliteMessageStore
from tests.conftest import ROOT, RedisServer, System, free_port
from tests.e2e.conftest import World, stored_rows
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.topologies]

#: Why the bare-socket tests run on the embedded topology only.
BROKER_SEES_CONNECTIONS = (
    "a bare CONNECT without a status publish: only the embedded broker turns connections into presence "
    "itself; on any broker a device announces itself (test_presence_any_broker.py runs the lost-connection "
    "and silent-client cases that way on both topologies)")


class PresenceWatcher:
    """Subscribes to users' presence topics and records every status it sees."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.seen: dict[str, list[str]] = {}
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.client.messages:
            user = msg.topic.value.split("/")[1]
            self.seen.setdefault(user, []).append(json.loads(bytes(msg.payload))["status"])

    async def watch(self, user: str) -> None:
        await self.client.subscribe(topics.user_presence(user), qos=1)

    def last(self, user: str) -> str | None:
        seen = self.seen.get(user)
        return seen[-1] if seen else None

    async def wait_for(self, user: str, status: str, within: float) -> float:
        """Wait until ``user``'s last presence is ``status``; returns the seconds it took."""
        start = time.monotonic()
        await wait_for(lambda: self.last(user) == status, within, what=f"{user} {status}")
        return time.monotonic() - start

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


@pytest.fixture
async def watcher(system: System, world: World) -> AsyncIterator[PresenceWatcher]:
    s = world.bob_laptop  # bob shares the channel with alice, so he may watch her presence
    async with aiomqtt.Client("127.0.0.1", system.mqtt_port, identifier=f"{s.user_id}:{s.device_id}",
                              username=s.user_id, password=s.token) as client:
        w = PresenceWatcher(client)
        await w.watch(world.alice)
        yield w
        await w.close()


async def test_connect_clean_disconnect_and_multi_device(system: System, world: World,
                                                         watcher: PresenceWatcher) -> None:
    phone = Device(world.alice_phone)
    await phone.__aenter__()
    await watcher.wait_for(world.alice, "online", within=5)
    async with Device(world.alice_tablet):
        await phone.__aexit__(None)
        await asyncio.sleep(0.5)  # a window for a wrong "offline" to be published: none must
        assert watcher.last(world.alice) == "online"  # the tablet is still connected
    elapsed = await watcher.wait_for(world.alice, "offline", within=5)
    assert elapsed < 2.0  # a clean disconnect is seen at once
    async with Device(world.alice_phone):
        await watcher.wait_for(world.alice, "online", within=5)
    # Published only on change: online, offline, online, offline (no duplicates for the second device).
    await watcher.wait_for(world.alice, "offline", within=5)
    assert watcher.seen[world.alice] == ["online", "offline", "online", "offline"]


@pytest.mark.embedded_only(BROKER_SEES_CONNECTIONS)
async def test_lost_connection_without_disconnect_goes_offline(system: System, world: World,
                                                               watcher: PresenceWatcher) -> None:
    s = world.alice_phone
    sock = socket.create_connection(("127.0.0.1", system.mqtt_port))
    sock.sendall(codec.encode_connect(f"{s.user_id}:{s.device_id}", username=s.user_id, password=s.token,
                                    keepalive=30))
    assert sock.recv(4) == b"\x20\x02\x00\x00"
    await watcher.wait_for(world.alice, "online", within=5)
    sock.shutdown(socket.SHUT_RDWR)  # the network goes away: no DISCONNECT packet
    sock.close()
    assert await watcher.wait_for(world.alice, "offline", within=1.5 * 30 + 1) < 2.0


@pytest.mark.embedded_only(BROKER_SEES_CONNECTIONS)
async def test_silent_client_is_dropped_after_one_and_a_half_keepalives(system: System, world: World,
                                                                        watcher: PresenceWatcher) -> None:
    s = world.alice_phone
    keepalive = 2
    sock = socket.create_connection(("127.0.0.1", system.mqtt_port))
    will = (topics.device_presence(s.user_id, s.device_id), b'{"status": "offline", "ts": 0}', 1, True)
    sock.sendall(codec.encode_connect(f"{s.user_id}:{s.device_id}", username=s.user_id, password=s.token,
                                    keepalive=keepalive, will=will))
    assert sock.recv(4) == b"\x20\x02\x00\x00"
    await watcher.wait_for(world.alice, "online", within=5)
    start = time.monotonic()
    # Now silence: no PINGREQ, no FIN. The broker must close the connection and fire the will.
    sock.settimeout(1.5 * keepalive + 2)
    assert sock.recv(1) == b""  # closed by the broker
    dropped_after = time.monotonic() - start
    sock.close()
    assert 1.5 * keepalive - 0.5 <= dropped_after <= 1.5 * keepalive + 1
    await watcher.wait_for(world.alice, "offline", within=2)


async def test_away_is_reported_when_every_device_is_away(system: System, world: World,
                                                          watcher: PresenceWatcher) -> None:
    async with Device(world.alice_phone) as phone:
        await watcher.wait_for(world.alice, "online", within=5)
        # As a device says it (docs/protocol.md): with its connection id, which an external broker's
        # path needs to tell this connection's status from another's, and repeated by its heartbeat.
        await phone.set_status("away")
        await watcher.wait_for(world.alice, "away", within=5)
        await phone.set_status("online")
        await watcher.wait_for(world.alice, "online", within=5)


@pytest.mark.embedded_only("bob's watching laptop is a bare MQTT client: only the embedded broker counts a "
                           "connection as online without a status publish")
async def test_channel_online_count_follows_presence(system: System, world: World,
                                                     watcher: PresenceWatcher) -> None:
    async def count() -> int:
        doc = await world.api._call("GET", f"/v1/channels/{world.channel}/presence", world.bob_phone.token)
        return int(doc["online"])

    async def online_is(n: int) -> bool:
        return await count() == n

    async with Device(world.alice_phone):
        await watcher.wait_for(world.alice, "online", within=5)
        await wait_for(lambda: online_is(2), 5, what="2 online")  # alice, and bob's watching laptop
    await watcher.wait_for(world.alice, "offline", within=5)
    await wait_for(lambda: online_is(1), 5, what="1 online")


@pytest.mark.embedded_only("the typing rate limit is the embedded broker's (deploy/brokers/mosquitto/mosquitto.conf: "
                           "Mosquitto has none)")
async def test_typing_is_relayed_rate_limited_and_never_stored(system: System, world: World) -> None:
    b = world.bob_phone
    async with Device(world.alice_phone) as alice, \
            aiomqtt.Client("127.0.0.1", system.mqtt_port, identifier=f"{b.user_id}:{b.device_id}",
                           username=b.user_id, password=b.token) as bob:
        await bob.subscribe(topics.typing_filter(world.channel), qos=0)
        got: list[bytes] = []

        async def read() -> None:
            async for msg in bob.messages:
                got.append(bytes(msg.payload))

        reader = asyncio.create_task(read())
        for _ in range(10):  # a burst far above the limit
            await alice.client.publish(topics.typing(world.channel, world.alice), b'{"typing": true}', qos=0)
        await wait_for(lambda: len(got) >= 3, 5, what="the burst allowance relayed")
        await asyncio.sleep(1.0)  # a window for more of the burst to get through: none must
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    assert len(got) == 3  # the burst allowance; the other 7 were dropped
    assert got[0] == b'{"typing": true}'
    assert stored_rows(system.data_dir, world.channel) == []


# --- broker crash: leases expire -----------------------------------------------------------------


def _spawn(module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", module], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


async def _wait_ready(path: Path, proc: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(30):
        while not path.exists():
            assert proc.poll() is None, "process exited while starting"
            await asyncio.sleep(0.05)


async def test_devices_of_a_crashed_broker_go_offline_within_the_lease(tmp_path: Path,
                                                                       redis_server: RedisServer) -> None:
    lease_ms = 3000
    data = tmp_path / "data"
    directory = await SqliteDirectory(data / "directory.db").open()
    await directory.create_channel("group", "g", "alice", ["bob"], now_ms=1)
    await directory.close()
    store = await SqliteMessageStore(data / "messages.db").open()
    await store.close()
    port = free_port()
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {
        "MQCHAT_DATA_DIR": str(data), "MQCHAT_MQTT__PORT": str(port), "MQCHAT_MQTT__WS_PORT": str(free_port()),
        "MQCHAT_AUTH__SECRET": "s" * 40, "MQCHAT_REDIS__URL": redis_server.url,
        "MQCHAT_BROKER__PRESENCE_LEASE_MS": str(lease_ms)}
    keys = auth.load_keys(load_settings(data_dir=data, auth={"secret": "s" * 40}))
    now = int(time.time())
    alice = auth.issue(keys, user_id="alice", device_id="phone", now=now)
    bob = auth.issue(keys, user_id="bob", device_id="laptop", now=now)
    procs = [_spawn("broker", env)]
    try:
        await _wait_ready(data / "run" / "broker.ready", procs[0])
        procs.append(_spawn("workers", env))
        await _wait_ready(data / "run" / "workers.ready", procs[1])
        device = aiomqtt.Client("127.0.0.1", port, identifier="alice:phone", username="alice", password=alice)
        await device.__aenter__()
        await asyncio.sleep(0.5)  # the lease is written
        os.killpg(procs[0].pid, signal.SIGKILL)  # no wills, no disconnect hooks
        procs[0].wait()
        killed_at = time.monotonic()
        (data / "run" / "broker.ready").unlink(missing_ok=True)
        procs[0] = _spawn("broker", env)  # a replacement node
        await _wait_ready(data / "run" / "broker.ready", procs[0])
        async with aiomqtt.Client("127.0.0.1", port, identifier="bob:laptop", username="bob",
                                  password=bob) as watcher_client:
            w = PresenceWatcher(watcher_client)
            await w.watch("alice")
            await w.wait_for("alice", "offline", within=lease_ms / 1000 + 3)
            offline_after = time.monotonic() - killed_at
            await w.close()
        assert offline_after <= lease_ms / 1000 + 2  # lease TTL plus the sweep interval and slack
        with contextlib.suppress(aiomqtt.MqttError):  # its broker is gone
            await device.__aexit__(None, None, None)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(20)
