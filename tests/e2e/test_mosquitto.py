"""The bridge is broker-agnostic: unchanged, it orders, persists and acks through a real Mosquitto."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest

from mqchat import schema, topics
from mqchat.storage.sqlite import SqliteDirectory
from tests.conftest import ROOT, Mosquitto

pytestmark = pytest.mark.e2e


def spawn_bridge(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bridge"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def test_bridge_over_mosquitto(tmp_path: Path, mosquitto: Mosquitto) -> None:
    port = mosquitto.port
    data = tmp_path / "data"
    directory = await SqliteDirectory(data / "directory.db").open()
    channel, _ = await directory.create_channel("group", "m", "alice", ["bob"], now_ms=1)
    await directory.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {
        "MQCHAT_DATA_DIR": str(data), "MQCHAT_MQTT__PORT": str(port), "MQCHAT_AUTH__SECRET": "k" * 40}
    bridge = spawn_bridge(env)
    try:
        deadline = time.monotonic() + 20
        while not (data / "run" / "bridge.ready").exists():
            assert bridge.poll() is None, bridge.stderr.read().decode() if bridge.stderr else ""
            assert time.monotonic() < deadline, "bridge did not start"
            await asyncio.sleep(0.05)

        cid = channel.channel_id
        async with aiomqtt.Client("127.0.0.1", port, identifier="alice:phone") as alice, \
                aiomqtt.Client("127.0.0.1", port, identifier="carol:phone") as carol:
            await alice.subscribe(topics.ack("alice", "phone"), qos=1)
            await alice.subscribe(topics.stream(cid), qos=1)
            await carol.subscribe(topics.ack("carol", "phone"), qos=1)
            for i in range(20):
                await alice.publish(topics.send("alice", "phone", cid),
                                    schema.encode(schema.SendRequest(cmid=f"m{i}", kind="text", body=str(i))), qos=1)
            await carol.publish(topics.send("carol", "phone", cid),
                                schema.encode(schema.SendRequest(cmid="x", kind="text", body="no")), qos=1)
            acks, stream = [], []
            async with asyncio.timeout(10):
                async for msg in alice.messages:
                    raw = bytes(msg.payload) if isinstance(msg.payload, bytes | bytearray) else b""
                    if msg.topic.value.startswith("dev/"):
                        acks.append(schema.decode_ack(raw))
                    else:
                        stream.append(schema.decode_channel_message(raw))
                    if len(acks) == 20 and len(stream) == 20:
                        break
                async for msg in carol.messages:
                    refused = schema.decode_ack(bytes(msg.payload))
                    break
        assert [a.seq for a in acks] == list(range(1, 21))
        assert [m.seq for m in stream] == list(range(1, 21))
        assert [m.body for m in stream] == [str(i) for i in range(20)]
        assert refused.error is not None
        assert refused.error.code == "not_member"
    finally:
        bridge.send_signal(signal.SIGTERM)
        assert bridge.wait(20) == 0
        if bridge.stderr:
            bridge.stderr.close()


async def test_bridge_reconnects_after_the_broker_restarts(tmp_path: Path, mosquitto: Mosquitto) -> None:
    data = tmp_path / "data"
    directory = await SqliteDirectory(data / "directory.db").open()
    channel, _ = await directory.create_channel("group", "m", "alice", [], now_ms=1)
    await directory.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {
        "MQCHAT_DATA_DIR": str(data), "MQCHAT_MQTT__PORT": str(mosquitto.port), "MQCHAT_AUTH__SECRET": "k" * 40}
    ready = data / "run" / "bridge.ready"
    bridge = spawn_bridge(env)

    async def wait_ready() -> None:
        async with asyncio.timeout(30):
            while not ready.exists():
                assert bridge.poll() is None
                await asyncio.sleep(0.05)

    async def send_and_ack(cmid: str) -> schema.Ack:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="alice:phone") as alice:
            await alice.subscribe(topics.ack("alice", "phone"), qos=1)
            await alice.publish(topics.send("alice", "phone", channel.channel_id),
                                schema.encode(schema.SendRequest(cmid=cmid, kind="text", body=cmid)), qos=1)
            async with asyncio.timeout(10):
                async for msg in alice.messages:
                    return schema.decode_ack(bytes(msg.payload))
        raise AssertionError("no ack")

    try:
        await wait_ready()
        assert (await send_and_ack("before")).seq == 1
        mosquitto.kill()
        async with asyncio.timeout(10):
            while ready.exists():
                await asyncio.sleep(0.05)
        mosquitto.start()
        await wait_ready()
        after = await send_and_ack("after")
        assert after.ok
        assert after.seq == 2
        assert bridge.poll() is None
    finally:
        bridge.send_signal(signal.SIGTERM)
        assert bridge.wait(20) == 0
        if bridge.stderr:
            bridge.stderr.close()
