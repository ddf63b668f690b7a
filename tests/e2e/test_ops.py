"""Operations endpoints: /metrics, /healthz and /readyz on the bridge, the broker and the API."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import httpx
import pytest

from mqchat import auth, schema, topics
from mqchat.config import load_settings
from mqchat.storage.sqlite import SqliteDirectory
from tests.conftest import ROOT, Mosquitto, RedisServer, System, free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e


def spawn(module: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", module], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as http:
        for _ in range(100):
            try:
                return await http.get(url)
            except httpx.ConnectError:
                await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never answered")


async def status_is(url: str, status: int) -> bool:
    return (await get(url)).status_code == status


async def test_bridge_metrics_and_readiness(tmp_path: Path, mosquitto: Mosquitto) -> None:
    data = tmp_path / "data"
    directory = await SqliteDirectory(data / "directory.db").open()
    channel, _ = await directory.create_channel("group", "m", "alice", [], now_ms=1)
    await directory.close()
    ops = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {
        "MQCHAT_DATA_DIR": str(data), "MQCHAT_MQTT__PORT": str(mosquitto.port), "MQCHAT_AUTH__SECRET": "k" * 40,
        "MQCHAT_OPS__BRIDGE_PORT": str(ops)}
    bridge = spawn("bridge", env)
    base = f"http://127.0.0.1:{ops}"
    try:
        await wait_for(lambda: status_is(f"{base}/readyz", 200), 20, what="bridge ready")
        assert (await get(f"{base}/healthz")).json() == {"status": "ok"}
        async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="alice:phone") as alice:
            await alice.subscribe(topics.ack("alice", "phone"), qos=1)
            for payload in (b"not json", schema.encode(schema.SendRequest(cmid="a", kind="text", body="hi"))):
                await alice.publish(topics.send("alice", "phone", channel.channel_id), payload, qos=1)
                async with asyncio.timeout(10):
                    async for _ in alice.messages:  # its ack
                        break
        text = (await get(f"{base}/metrics")).text
        assert metric(text, 'mqchat_bridge_sends_total{outcome="accepted"}') == 1
        assert metric(text, 'mqchat_bridge_sends_total{outcome="rejected_malformed"}') == 1
        assert metric(text, "mqchat_bridge_receive_to_ack_seconds_count") == 2
        assert metric(text, "mqchat_bridge_connected") == 1
        mosquitto.kill()  # the broker goes away: the bridge is alive but not ready
        await wait_for(lambda: status_is(f"{base}/readyz", 503), 10, what="bridge not ready")
        assert (await get(f"{base}/healthz")).status_code == 200
    finally:
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(20)


async def test_broker_counts_connections(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await (await SqliteDirectory(data / "directory.db").open()).close()
    port, ops = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {
        "MQCHAT_DATA_DIR": str(data), "MQCHAT_MQTT__PORT": str(port), "MQCHAT_MQTT__WS_PORT": str(free_port()),
        "MQCHAT_AUTH__SECRET": "k" * 40, "MQCHAT_OPS__BROKER_PORT": str(ops)}
    broker = spawn("broker", env)
    base = f"http://127.0.0.1:{ops}"
    try:
        assert (await get(f"{base}/readyz")).status_code == 200
        keys = auth.load_keys(load_settings(data_dir=data, auth={"secret": "k" * 40}))
        token = auth.issue(keys, user_id="alice", device_id="phone", now=int(time.time()))
        async def connections_are(n: int) -> bool:
            return metric((await get(f"{base}/metrics")).text, "mqchat_broker_connections") == n

        async with aiomqtt.Client("127.0.0.1", port, identifier="alice:phone", username="alice", password=token):
            await wait_for(lambda: connections_are(1), 5, what="1 connection counted")
        await wait_for(lambda: connections_are(0), 5, what="0 connections counted")
        text = (await get(f"{base}/metrics")).text
        assert metric(text, "mqchat_broker_connections") == 0
        assert metric(text, "mqchat_broker_connects_total") == 1
    finally:
        broker.send_signal(signal.SIGTERM)
        broker.wait(20)


async def test_api_serves_metrics_and_readiness(system: System) -> None:
    assert (await get(f"{system.api}/readyz")).json() == {"ready": True}
    text = (await get(f"{system.api}/metrics")).text
    assert "python_gc_objects_collected_total" in text or "process_cpu_seconds_total" in text


async def test_workers_serve_metrics_and_readiness(tmp_path: Path, redis_server: RedisServer) -> None:
    data = tmp_path / "data"
    await (await SqliteDirectory(data / "directory.db").open()).close()
    ops = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {
        "MQCHAT_DATA_DIR": str(data), "MQCHAT_MQTT__PORT": str(free_port()), "MQCHAT_AUTH__SECRET": "k" * 40,
        "MQCHAT_REDIS__URL": redis_server.url, "MQCHAT_OPS__WORKERS_PORT": str(ops)}
    workers = spawn("workers", env)
    base = f"http://127.0.0.1:{ops}"
    try:
        assert (await get(f"{base}/readyz")).json() == {"ready": True}
        text = (await get(f"{base}/metrics")).text
        assert metric(text, "mqchat_presence_changes_published_total") == 0
        assert metric(text, "mqchat_presence_leases_expired_total") == 0
    finally:
        workers.send_signal(signal.SIGTERM)
        assert workers.wait(30) == 0
