"""Broker hardening checked end to end on the whole system (auth, ACL, presence), over real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest

from harness.client import Device
from mqchat import auth, topics
from mqchat.config import load_settings
from mqchat.mqtt import codec
from mqchat.storage.sqlite import SqliteDirectory
from tests.conftest import ROOT, System, free_port
from tests.e2e.conftest import World

pytestmark = pytest.mark.e2e


async def test_retained_messages_do_not_leak_to_other_clients_on_connect(system: System, world: World) -> None:
    # alice's phone publishes retained device presence; bob (who shares a channel) subscribes to it.
    async with Device(world.alice_phone) as alice:
        await alice.client.publish(topics.device_presence(world.alice, "phone"),
                                   json.dumps({"status": "online", "ts": 1}).encode(), qos=1, retain=True)
        b = world.bob_phone
        async with aiomqtt.Client("127.0.0.1", system.mqtt_port, identifier=f"{b.user_id}:{b.device_id}",
                                  username=b.user_id, password=b.token) as bob:
            await bob.subscribe(topics.device_presence(world.alice, "phone"), qos=1)
            async with asyncio.timeout(5):
                async for msg in bob.messages:  # bob gets the retained message: he may
                    assert msg.retain
                    break
            # carol shares no channel with alice: connecting must not hand her bob's retained matches
            c = world.carol_phone
            async with aiomqtt.Client("127.0.0.1", system.mqtt_port, identifier=f"{c.user_id}:{c.device_id}",
                                      username=c.user_id, password=c.token) as carol:
                got: list[str] = []

                async def read() -> None:
                    async for msg in carol.messages:
                        got.append(msg.topic.value)

                reader = asyncio.create_task(read())
                await asyncio.sleep(1.0)  # a window for a presence message to leak through: none must
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
                assert got == []
                # and subscribing to it is refused outright
                result = await carol.subscribe(topics.device_presence(world.alice, "phone"), qos=1)
                code = result[0] if isinstance(result[0], int) else result[0].value
                assert code == 0x80


async def test_a_socket_that_never_sends_connect_is_closed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await (await SqliteDirectory(data / "directory.db").open()).close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {
        "MQCHAT_DATA_DIR": str(data), "MQCHAT_MQTT__PORT": str(port), "MQCHAT_MQTT__WS_PORT": str(free_port()),
        "MQCHAT_AUTH__SECRET": "k" * 40, "MQCHAT_BROKER__CONNECT_TIMEOUT_S": "1"}
    broker = subprocess.Popen([sys.executable, "-m", "broker"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        async with asyncio.timeout(20):
            while not (data / "run" / "broker.ready").exists():
                await asyncio.sleep(0.05)
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(5)]
        start = time.monotonic()
        for s in socks:
            s.settimeout(5)
            assert s.recv(1) == b""  # closed by the broker, not left open
            s.close()
        assert time.monotonic() - start < 3
        # a half-sent CONNECT is closed too
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"\x10\x20\x00\x04MQ")
        s.settimeout(5)
        assert s.recv(1) == b""
        s.close()
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(20)


async def test_a_draining_broker_sheds_connections_gradually(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await (await SqliteDirectory(data / "directory.db").open()).close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {
        "MQCHAT_DATA_DIR": str(data), "MQCHAT_MQTT__PORT": str(port), "MQCHAT_MQTT__WS_PORT": str(free_port()),
        "MQCHAT_AUTH__SECRET": "k" * 40, "MQCHAT_BROKER__DRAIN_S": "2"}
    broker = subprocess.Popen([sys.executable, "-m", "broker"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    keys = auth.load_keys(load_settings(data_dir=data, auth={"secret": "k" * 40}))
    closed_at: list[float] = []
    try:
        async with asyncio.timeout(20):
            while not (data / "run" / "broker.ready").exists():
                await asyncio.sleep(0.05)
        socks = []
        for i in range(20):
            token = auth.issue(keys, user_id=f"u{i}", device_id="d", now=int(time.time()))
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(codec.encode_connect(f"u{i}:d", username=f"u{i}", password=token, keepalive=60))
            assert s.recv(4) == b"\x20\x02\x00\x00"
            s.setblocking(False)
            socks.append(s)
        broker.send_signal(signal.SIGTERM)
        start = time.monotonic()
        loop = asyncio.get_running_loop()

        async def wait_closed(s: socket.socket) -> None:
            assert await loop.sock_recv(s, 1) == b""
            closed_at.append(time.monotonic() - start)

        async with asyncio.timeout(10):
            await asyncio.gather(*(wait_closed(s) for s in socks))
        for s in socks:
            s.close()
    finally:
        broker.wait(20)
    assert len(closed_at) == 20
    assert max(closed_at) - min(closed_at) >= 1.0  # spread out, not one herd
    assert max(closed_at) <= 4.0
