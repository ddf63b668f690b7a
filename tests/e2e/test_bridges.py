"""Several bridges, one order per channel: 3 bridges, one SIGKILLed and one added mid-run, with
the shared intake (sends forwarded to their channel's owner) and with the plain subscription.

Runs against a real Mosquitto (so this is also the broker-agnostic proof for the bridge), a real
Redis for the partition leases and one SQLite message store shared by the bridges.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import pytest

from mqchat import schema, topics
from mqchat.storage.sqlite import SqliteDirectory, SqliteMessageStore
from tests.conftest import ROOT, Mosquitto, RedisServer

pytestmark = pytest.mark.e2e

CHANNELS = 50
USERS = 10
MESSAGES = 20_000


def spawn_bridge(env: dict[str, str], worker: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bridge"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env | {"MQCHAT_BRIDGE__WORKER_ID": str(worker)})


async def wait_ready(path: Path, proc: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(30):
        while not path.exists():
            assert proc.poll() is None, "bridge exited while starting"
            await asyncio.sleep(0.05)


async def lease_owners(url: str) -> set[str]:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        keys = [k async for k in r.scan_iter("mqchat:bridge:lease:*")]
        return {str(v) for v in await r.mget(keys) if v}
    finally:
        await r.aclose()


@pytest.mark.timeout(360)  # 20,000 sends through three bridges, one killed, one added: minutes on 2 cores
@pytest.mark.parametrize("intake", ["shared", "plain"])
async def test_three_bridges_one_killed_one_added_keep_every_channel_in_order(
    tmp_path: Path, mosquitto: Mosquitto, redis_server: RedisServer, intake: str
) -> None:
    """``shared``: the bridges share ``$share/bridges/in/+/+/+`` and forward sends they do not
    own to the owner; ``plain``: every bridge receives every send."""
    data = tmp_path / "data"
    directory = await SqliteDirectory(data / "directory.db").open()
    users = [f"u{i}" for i in range(USERS)]
    channels = [(await directory.create_channel("group", f"g{i}", users[0], users[1:], now_ms=1))[0].channel_id
                for i in range(CHANNELS)]
    await directory.close()
    await (await SqliteMessageStore(data / "messages.db").open()).close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {
        "MQCHAT_DATA_DIR": str(data), "MQCHAT_MQTT__PORT": str(mosquitto.port), "MQCHAT_AUTH__SECRET": "k" * 40,
        "MQCHAT_REDIS__URL": redis_server.url, "MQCHAT_BRIDGE__COORDINATE": "true",
        "MQCHAT_BRIDGE__LEASE_MS": "1500", "MQCHAT_LOG_LEVEL": "WARNING",
        "MQCHAT_BRIDGE__SHARED_INTAKE": str(intake == "shared").lower()}
    bridges = {w: spawn_bridge(env, w) for w in (0, 1, 2)}
    acks: dict[str, schema.Ack] = {}
    try:
        for w, proc in bridges.items():
            await wait_ready(data / "run" / ("bridge.ready" if w == 0 else f"bridge-{w}.ready"), proc)
        await asyncio.sleep(1.0)  # let the leases settle

        async def device(user: str, n: int) -> None:
            rng = random.Random(user)
            pending: dict[str, tuple[str, bytes, float]] = {}
            async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier=f"{user}:d",
                                      max_inflight_messages=200) as client:
                await client.subscribe(topics.ack(user, "d"), qos=1)

                async def read() -> None:
                    async for msg in client.messages:
                        ack = schema.decode_ack(bytes(msg.payload))
                        if ack.ok and ack.cmid in pending:
                            acks[ack.cmid] = ack
                            del pending[ack.cmid]

                reader = asyncio.create_task(read())
                sent = 0
                deadline = time.monotonic() + 240
                while (sent < n or pending) and time.monotonic() < deadline:
                    while sent < n and len(pending) < 100:
                        cmid = f"{user}.{sent}"
                        ch = rng.choice(channels)
                        payload = schema.encode(schema.SendRequest(cmid=cmid, kind="text", body=cmid))
                        pending[cmid] = (ch, payload, time.monotonic())
                        await client.publish(topics.send(user, "d", ch), payload, qos=1)
                        sent += 1
                    now = time.monotonic()
                    for cmid, (ch, payload, at) in list(pending.items()):
                        if now - at > 3:  # no ack (e.g. its bridge died): resend with the same cmid
                            pending[cmid] = (ch, payload, now)
                            await client.publish(topics.send(user, "d", ch), payload, qos=1)
                    await asyncio.sleep(0.01)
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)

        async def disturb() -> None:
            async with asyncio.timeout(300):
                while len(acks) < MESSAGES // 4:
                    await asyncio.sleep(0.05)
                bridges[1].send_signal(signal.SIGKILL)  # crash: no lease release, no drain
                while len(acks) < MESSAGES // 2:
                    await asyncio.sleep(0.05)
                bridges[3] = spawn_bridge(env, 3)

        await asyncio.gather(disturb(), *(device(u, MESSAGES // USERS) for u in users))
        owners = await lease_owners(redis_server.url)
        assert "b3" in owners  # the added bridge took partitions over
        assert "b1" not in owners  # the killed bridge's leases expired and moved
    finally:
        for proc in bridges.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in bridges.values():
            proc.wait(30)

    assert len(acks) == MESSAGES, "some sends were never acked"
    with sqlite3.connect(data / "messages.db") as db:
        rows = db.execute("SELECT channel_id, seq, sender, cmid FROM messages ORDER BY channel_id, seq").fetchall()
    assert len(rows) == MESSAGES  # nothing stored twice
    by_channel: dict[str, list[int]] = {}
    stored = {}
    for ch, seq, _sender, cmid in rows:
        by_channel.setdefault(ch, []).append(seq)
        stored[cmid] = (ch, seq)
    for ch, seqs in by_channel.items():
        assert seqs == list(range(1, len(seqs) + 1)), f"channel {ch} has a gap or a repeat"
    for cmid, ack in acks.items():  # every ack names the row that holds the message
        assert stored[cmid] == (ack.channel, ack.seq)
