"""Two workers processes at once on Mosquitto: one of them (the fenced leader lease) ingests the
device status publishes in the broker's order and publishes presence, and when that one is SIGKILLed
mid-stream the other takes over its persistent ingest session: the statuses sent while no instance
led are applied, in order, by the next leader; no change lost, none published out of order."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from harness.mosquitto import Mosquitto
from harness.ports import free_port
from mqchat import topics
from mqchat.storage.keys import PRESENCE_GROUP, PRESENCE_SHARDS, Keys
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.redis_state import RedisState
from mqchat.storage.sqlite import SqliteDirectory, SqliteMessageStore
from tests.conftest import ROOT, RedisServer
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

USERS = 20
ROUNDS = 12
LEADER_LEASE_MS = 1000


def spawn_workers(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "workers"], env=env, cwd=ROOT, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)


async def test_the_other_workers_instance_takes_over_presence_when_the_leader_dies(
        tmp_path: Path, redis_server: RedisServer, mosquitto: Mosquitto) -> None:
    broker = mosquitto
    data = tmp_path / "data"
    await (await SqliteDirectory(data / "directory.db").open()).close()
    await (await SqliteMessageStore(data / "messages.db").open()).close()
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {
        "MQCHAT_DATA_DIR": str(data), "MQCHAT_MQTT__PORT": str(broker.port), "MQCHAT_MQTT__BROKER": "external",
        "MQCHAT_MQTT__WS_PORT": str(free_port()), "MQCHAT_AUTH__SECRET": "s" * 40,
        "MQCHAT_REDIS__URL": redis_server.url, "MQCHAT_PUSH__ENABLED": "false", "MQCHAT_SEARCH__ENABLED": "false",
        "MQCHAT_PRESENCE__LEADER_LEASE_MS": str(LEADER_LEASE_MS), "MQCHAT_LOG_LEVEL": "INFO"}
    ready = data / "run" / "workers.ready"
    redis = RedisClient.from_url(redis_server.url)
    state, keys = RedisState(redis), Keys()
    r: Any = redis.driver
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(2):
            ready.unlink(missing_ok=True)
            procs.append(spawn_workers(env, tmp_path / f"workers{i}.log"))
            await wait_for(ready.exists, 30, what=f"workers {i} ready")

        async def leader_pid() -> int | None:
            owner = await r.hget(keys.leader("presence"), "owner")
            return next((p.pid for p in procs if owner and f"w{p.pid}-" in owner.decode()), None)

        async def has_leader() -> bool:
            return await leader_pid() is not None

        await wait_for(has_leader, 10, what="a leader")
        first = await leader_pid()
        assert first is not None
        first_token = int(await r.hget(keys.leader("presence"), "token"))

        seen: dict[str, list[tuple[str, int]]] = {}
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="watch") as watcher, \
                aiomqtt.Client("127.0.0.1", broker.port, identifier="devices") as devices:
            await watcher.subscribe(f"{topics.PRESENCE}/+", qos=1)  # every user's aggregate

            async def watch() -> None:
                async for msg in watcher.messages:
                    doc = json.loads(bytes(msg.payload))
                    seen.setdefault(msg.topic.value.split("/")[1], []).append((doc["status"], doc["last_seen"]))

            reader = asyncio.create_task(watch())
            final: dict[str, str] = {}

            async def say(user: str, status: str) -> None:
                payload = json.dumps({"status": status, "ts": 1, "conn": "c1"}).encode()
                await devices.publish(topics.device_presence(user, "phone"), payload, qos=1)
                final[user] = status

            for rnd in range(ROUNDS):
                for n in range(USERS):  # no pause: a user's statuses follow each other within milliseconds
                    await say(f"u{n}", "online" if rnd % 2 == 0 else "away" if rnd % 4 == 1 else "offline")
                if rnd == ROUNDS // 2:  # mid-stream: the leader dies without a word
                    os.killpg(first, signal.SIGKILL)
            # The rounds after the kill go to the ingest session while no instance leads (the broker
            # keeps them) or to the next leader. No heartbeat repairs anything here, so a status lost
            # or applied out of order would leave a wrong final state.
            await wait_for(lambda: _moved(r, keys, first_token), 15, what="a new leader")

            async def all_published() -> bool:
                agg = await state.presence_of(list(final))
                return all(agg[u].status == st and seen.get(u, [(None, 0)])[-1][0] == st for u, st in final.items())

            await wait_for(all_published, 30, what="every user's last status published")
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

        second = await leader_pid()
        assert second is not None
        assert second != first
        assert int(await r.hget(keys.leader("presence"), "token")) > first_token
        for u, published in seen.items():  # in change order, per user: last_seen never goes back
            stamps = [ts for _st, ts in published]
            assert stamps == sorted(stamps), (u, published)

        async def settled() -> bool:  # nothing read and left unacknowledged, nothing left unread, in any shard
            for shard in range(PRESENCE_SHARDS):
                group = {g["name"].decode(): g for g in await r.xinfo_groups(keys.changes(shard))}[PRESENCE_GROUP]
                if int(group["pending"]) or int(group.get("lag") or 0):
                    return False
            return True

        await wait_for(settled, 10, what="every change acknowledged")
    finally:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
                p.wait(20)
        await redis.close()


async def _moved(r: Any, keys: Keys, old_token: int) -> bool:
    token = await r.hget(keys.leader("presence"), "token")
    expires = int(await r.hget(keys.leader("presence"), "expires_ms") or 0)
    return int(token) > old_token and expires > 0
