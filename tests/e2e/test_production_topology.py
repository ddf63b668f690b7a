"""The production topology on one machine, with one of each scaled process killed mid-run.

Mosquitto is the broker (so presence comes from the devices' statuses, heartbeats and wills, read
by the workers' ingester), two bridges share the send intake, two workers instances share the
presence ingest (one of them elected to publish), and every Redis key lives in a three-node Redis
Cluster. While a user sends into several channels, one bridge and the presence leader are
SIGKILLed. Then:

- no acked message is lost or duplicated, and each channel's history is gap-free, in ack order;
- what the live member received never goes backwards within a channel;
- presence converges (the online user shows online, then offline once disconnected);
- the offline member gets pushes, the online member none.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.client import Api, Device
from harness.mosquitto import Mosquitto
from harness.ports import free_port
from harness.processes import NotInstalled
from harness.push_standins.apns import ApnsStandIn
from harness.push_standins.fcm import FcmStandIn
from mqchat.storage.keys import Keys
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.redis_state import RedisState
from tests.conftest import ROOT, RedisClusterServers, System
from tests.e2e.conftest import make_world
from tests.e2e.test_push import drained, push_env, register
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

CHANNELS = 4
PER_CHANNEL = 40
KILL_AFTER = PER_CHANNEL // 3


@pytest.fixture
def mosquitto_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    try:
        broker = Mosquitto(tmp_path, tuned=True).start()
    except NotInstalled as exc:
        pytest.skip(str(exc))
    yield broker
    broker.kill()


def spawn(module: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", module], env=env, cwd=ROOT, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return int(r.status) == 200
    except (OSError, urllib.error.URLError):
        return False


@pytest.mark.timeout(600)  # a whole system, two extra processes and a cluster: minutes on 2 cores
async def test_one_bridge_and_the_presence_leader_killed_on_mosquitto_and_a_redis_cluster(
        tmp_path: Path, redis_cluster: RedisClusterServers, mosquitto_broker: Mosquitto,
        fcm_standin: FcmStandIn, apns_standin: ApnsStandIn) -> None:
    for port in redis_cluster.ports:
        redis_cluster.cli(port, "flushall")
        redis_cluster.cli(port, "script", "flush")
    settings_env = push_env(redis_cluster, fcm_standin, apns_standin) | {  # type: ignore[arg-type]
        "MQCHAT_REDIS__URL": redis_cluster.url,  # push_env's is the cluster's too: it reads ``.url``
        "MQCHAT_RATELIMIT__ENABLED": "false",
        "MQCHAT_BRIDGE__COORDINATE": "true",  # several bridges, each ordering its partitions' channels
        "MQCHAT_BRIDGE__LEASE_MS": "1500",
        "MQCHAT_BROKER__PRESENCE_LEASE_MS": "10000",
        "MQCHAT_PRESENCE__LEADER_LEASE_MS": "1500",
        "MQCHAT_PUSH__CLAIM_IDLE_S": "2",
        "MQCHAT_SEARCH__CLAIM_IDLE_S": "2",
    }
    system = System.on_free_ports(tmp_path, broker_port=mosquitto_broker.port, env=settings_env)
    system.mosquitto = mosquitto_broker
    extra: list[subprocess.Popen[bytes]] = []
    redis = RedisClient.from_url(redis_cluster.url)
    r: Any = redis.driver
    state, keys = RedisState(redis), Keys()
    api = Api(system.api)
    try:
        system.start()
        # The second bridge and the second workers instance, configured as `mqchat up` configures its own.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | settings_env | {
            "MQCHAT_DATA_DIR": str(system.data_dir.resolve()), "MQCHAT_MQTT__HOST": "127.0.0.1",
            "MQCHAT_MQTT__PORT": str(mosquitto_broker.port), "MQCHAT_MQTT__BROKER": "external",
            "MQCHAT_MQTT__WS_PORT": str(system.ws_port), "MQCHAT_HTTP__PORT": str(system.http_port),
            "MQCHAT_LOG_LEVEL": "INFO"}  # the logs stay in tmp_path
        bridge_ops, workers_ops = free_port(), free_port()
        bridge2 = spawn("bridge", env | {"MQCHAT_BRIDGE__WORKER_ID": "1", "MQCHAT_OPS__BRIDGE_PORT": str(bridge_ops)},
                        tmp_path / "bridge-1.log")
        workers2 = spawn("workers", env | {"MQCHAT_OPS__WORKERS_PORT": str(workers_ops)}, tmp_path / "workers-2.log")
        extra += [bridge2, workers2]
        await wait_for(lambda: (system.data_dir / "run" / "bridge-1.ready").exists(), 60, what="the second bridge")
        await wait_for(lambda: healthy(workers_ops), 60, what="the second workers instance")

        async def partition_owners() -> set[str]:  # bridge.partitions: 64 by default
            owners = [await r.get(keys.lease(p)) for p in range(64)]  # one at a time: a fresh cluster client
            return {v.decode() for v in owners if v}

        async def two_bridges_own() -> bool:
            return len(await partition_owners()) == 2

        await wait_for(two_bridges_own, 30, what="both bridges owning partitions")

        world = await make_world(api)
        members = [world.bob, world.carol]
        channels = [await api.create_channel(world.alice_phone.token, "group", members, name=f"topo{i}")
                    for i in range(CHANNELS)]
        bob_token, carol_token = "bob-fcm-" + "b" * 150, "carol-fcm-" + "c" * 150
        await register(api, world.bob_phone.token, {"platform": "fcm", "token": bob_token})
        await register(api, world.carol_phone.token, {"platform": "fcm", "token": carol_token})

        async with Device(world.alice_phone, ack_timeout_s=4.0) as alice, Device(world.bob_phone) as bob:
            for c in channels:
                await bob.join(c)

            async def presence_is(expected: list[str]) -> bool:
                seen = await state.presence_of([world.alice, world.bob, world.carol])
                return [seen[u].status for u in (world.alice, world.bob, world.carol)] == expected

            await wait_for(lambda: presence_is(["online", "online", "offline"]), 20,
                           what="alice and bob online, carol offline")

            async def leader_pid() -> int:
                owner = await r.hget(keys.leader("presence"), "owner")
                found = re.search(rb"w(\d+)-", owner or b"")
                assert found, f"no presence leader: {owner!r}"
                return int(found.group(1))

            leader = await leader_pid()
            acked: dict[str, list[tuple[int, str]]] = {c: [] for c in channels}
            killed = asyncio.Event()

            async def send_all(channel: str) -> None:
                for n in range(PER_CHANNEL):
                    if n == KILL_AFTER and not killed.is_set():
                        killed.set()
                        os.killpg(bridge2.pid, signal.SIGKILL)
                        os.kill(leader, signal.SIGKILL)
                    ack = await alice.send(channel, f"{channel} #{n}", retries=8)
                    assert ack.ok, ack
                    assert ack.seq is not None
                    assert ack.id is not None
                    acked[channel].append((ack.seq, ack.id))

            await asyncio.gather(*(send_all(c) for c in channels))
            assert bridge2.wait(10) == -signal.SIGKILL

            # Every acked message is in the history exactly once, gap-free, in ack order.
            for c in channels:
                page = await api.history(world.alice_phone.token, c, limit=200)
                stored = [(m["seq"], m["id"]) for m in page["messages"]]
                assert stored == sorted(acked[c]), c
                assert [s for s, _ in stored] == list(range(1, PER_CHANNEL + 1)), c
                assert len({m["cmid"] for m in page["messages"]}) == PER_CHANNEL

            # Live deliveries to bob never go backwards within a channel (a message a dead bridge
            # stored but never published is a gap bob fills by sync, not a reorder).
            for c in channels:
                seqs = [m.seq for m in bob.received[c]]
                firsts = list(dict.fromkeys(seqs))  # QoS 1 may repeat a delivery
                assert firsts == sorted(firsts), (c, seqs)
                assert set(firsts) <= set(range(1, PER_CHANNEL + 1))

            # A new leader was elected (a higher fencing token) and presence still follows the devices.
            async def new_leader() -> bool:
                return await leader_pid() != leader

            await wait_for(new_leader, 20, what="another presence leader")
            await wait_for(lambda: presence_is(["online", "online", "offline"]), 20,
                           what="presence unchanged through the kills")
            await drained(r, timeout=60)

        await wait_for(lambda: presence_is(["offline", "offline", "offline"]), 30, what="everyone offline")
        assert fcm_standin.recorder.for_token(carol_token), "the offline member got no push"
        assert fcm_standin.recorder.for_token(bob_token) == [], "a push reached a member who was online"
    finally:
        for p in extra:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(20)
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        await api.aclose()
        await redis.close()
        system.kill()
