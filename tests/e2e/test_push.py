"""Offline push end to end: ``mqchat up`` with its push workers pointed at the FCM and APNs stand-ins,
and a push worker killed mid-batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.client import Api, Device
from harness.push_standins.apns import ApnsStandIn
from harness.push_standins.common import Reply
from harness.push_standins.fcm import FcmStandIn
from mqchat.storage.keys import FANOUT_GROUP, SENDERS_GROUP, Keys
from mqchat.storage.push_state import PushRegistration, PushState, SendJob
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.redis_state import RedisState
from tests.conftest import ROOT, RedisServer, System
from tests.e2e.conftest import make_world
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.topologies]

KEYS = Keys()


def push_env(redis: RedisServer, fcm: FcmStandIn, apns: ApnsStandIn) -> dict[str, str]:
    return {
        "MQCHAT_REDIS__URL": redis.url,
        "MQCHAT_PUSH__FCM_SERVICE_ACCOUNT_FILE": str(fcm.service_account),
        "MQCHAT_PUSH__FCM_ENDPOINT": fcm.endpoint,
        "MQCHAT_PUSH__APNS_KEY_FILE": str(apns.key_file),
        "MQCHAT_PUSH__APNS_KEY_ID": apns.key_id,
        "MQCHAT_PUSH__APNS_TEAM_ID": apns.team_id,
        "MQCHAT_PUSH__APNS_TOPIC": "com.example.chat",
        "MQCHAT_PUSH__APNS_HOST": apns.host,
        "MQCHAT_PUSH__APNS_CA_FILE": str(apns.ca_file),
        "MQCHAT_PUSH__REQUEST_TIMEOUT_S": "3",
    }


async def drained(r: Any, *, timeout: float = 20.0) -> None:
    """Wait until both push streams have nothing unread or unacknowledged and no retry waits."""
    async def idle() -> bool:
        busy = 0
        for stream, group in ((KEYS.push_jobs, FANOUT_GROUP), (KEYS.push_sends, SENDERS_GROUP)):
            groups = {g["name"].decode(): g for g in await r.xinfo_groups(stream)} if await r.exists(stream) else {}
            g = groups.get(group)
            busy += 1 if g is None else int(g["pending"]) + int(g.get("lag") or 0)
        busy += await r.zcard(KEYS.push_retry)
        return int(busy) == 0

    await wait_for(idle, timeout, what="drained push streams")


async def jobs_added(r: Any) -> int:
    """Push jobs ever added to the jobs stream (the bridge adds them after acking, in the background)."""
    if not await r.exists(KEYS.push_jobs):
        return 0
    return int((await r.xinfo_stream(KEYS.push_jobs))["entries-added"])


async def enqueued_then_drained(r: Any, before: int, n: int = 1) -> None:
    """Wait until ``n`` push jobs were added since ``before`` (see :func:`jobs_added`), then until the
    workers finished them: draining alone could pass before the bridge has added the jobs."""
    async def enqueued() -> bool:
        return await jobs_added(r) >= before + n

    await wait_for(enqueued, what=f"{n} push job(s) enqueued")
    await drained(r)


async def sent_and_drained(r: Any, device: Device, channel: str, body: str) -> None:
    before = await jobs_added(r)
    assert (await device.send(channel, body)).ok
    await enqueued_then_drained(r, before)


async def register(api: Api, token: str, body: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = await api._call("PUT", "/v1/me/push", token, json=body)
    return doc


async def test_offline_member_gets_one_push_with_badge_and_collapse_key(
        system_factory: Any, redis_server: RedisServer, fcm_standin: FcmStandIn, apns_standin: ApnsStandIn) -> None:
    system: System = system_factory()
    system.env = push_env(redis_server, fcm_standin, apns_standin)
    system.start()
    api = Api(system.api)
    redis = RedisClient.from_url(redis_server.url)
    state, r = RedisState(redis), redis.driver
    try:
        w = await make_world(api)
        await api.add_member(w.alice_phone.token, w.channel, w.carol)
        # Bob has two unread messages in a direct channel from before he had a token.
        direct = await api.create_channel(w.alice_phone.token, "direct", [w.bob])
        before = await jobs_added(r)
        async with Device(w.alice_phone) as alice:
            for i in range(2):
                await alice.send(direct, f"earlier {i}")
        await enqueued_then_drained(r, before, 2)

        bob_token = "bob-fcm-" + "b" * 150
        carol_token = "c0" * 32
        alice_token = "alice-fcm-" + "a" * 140
        reg = await register(api, w.bob_phone.token, {"platform": "fcm", "token": bob_token, "locale": "en-GB"})
        assert reg["device_id"] == "phone"
        assert bob_token not in reg["token"]
        await register(api, w.carol_phone.token, {"platform": "apns", "token": carol_token})
        await register(api, w.alice_tablet.token, {"platform": "fcm", "token": alice_token})
        carol_laptop = await api.login("carol", "correct horse battery", "laptop")

        async with Device(w.alice_phone) as alice, Device(carol_laptop):
            async def online() -> bool:
                seen = await state.presence_of([w.alice, w.carol, w.bob])
                return [seen[u].status for u in (w.alice, w.carol, w.bob)] == ["online", "online", "offline"]

            await wait_for(online)
            ack = await alice.send(w.channel, "are you there, bob?")
            assert ack.ok

            async def bob_pushed() -> bool:
                return bool(fcm_standin.recorder.for_token(bob_token))

            await wait_for(bob_pushed)
            await drained(r)

        [push] = fcm_standin.recorder.for_token(bob_token)
        message = push.payload["message"]
        assert message["android"]["collapse_key"] == w.channel
        assert message["android"]["notification"]["notification_count"] == 3  # 2 in the direct channel + 1
        assert message["data"]["badge"] == "3"
        assert message["data"]["seq"] == str(ack.seq)
        assert message["notification"]["body"] == "are you there, bob?"
        assert apns_standin.recorder.received == []  # carol is online on her laptop
        assert fcm_standin.recorder.for_token(alice_token) == []  # alice is the sender (and online)
        assert [r.token for r in fcm_standin.recorder.received] == [bob_token]
        log = system.log.read_text()
        assert bob_token not in log
        assert carol_token not in log
    finally:
        await redis.close()
        await api.aclose()
        system.stop()


async def test_mute_and_unregister_stop_pushes(system_factory: Any, redis_server: RedisServer,
                                               fcm_standin: FcmStandIn, apns_standin: ApnsStandIn) -> None:
    system: System = system_factory()
    system.env = push_env(redis_server, fcm_standin, apns_standin)
    system.start()
    api = Api(system.api)
    redis = RedisClient.from_url(redis_server.url)
    try:
        w = await make_world(api)
        bob_token = "bob-fcm-" + "m" * 150
        await register(api, w.bob_phone.token, {"platform": "fcm", "token": bob_token, "preview": False})
        muted = await api._call("PUT", f"/v1/channels/{w.channel}/mute", w.bob_phone.token, json={"muted": True})
        assert muted == {"channel": w.channel, "muted": True}
        async with Device(w.alice_phone) as alice:
            await sent_and_drained(redis.driver, alice, w.channel, "muted")
            assert fcm_standin.recorder.received == []
            await api._call("PUT", f"/v1/channels/{w.channel}/mute", w.bob_phone.token, json={"muted": False})
            await alice.send(w.channel, "private text")
            await wait_for(lambda: bool(fcm_standin.recorder.received))
            [push] = fcm_standin.recorder.received
            assert "private text" not in str(push.payload)  # the device turned previews off
            async with httpx.AsyncClient(base_url=system.api) as http:
                gone = await http.delete("/v1/me/push", headers={"Authorization": f"Bearer {w.bob_phone.token}"})
                assert gone.status_code == 204
                listed = await http.get("/v1/me/push", headers={"Authorization": f"Bearer {w.bob_phone.token}"})
                assert listed.json() == {"devices": []}
            await sent_and_drained(redis.driver, alice, w.channel, "after logout")
        assert len(fcm_standin.recorder.received) == 1
    finally:
        await redis.close()
        await api.aclose()
        system.stop()


def start_push_worker(tmp: Path, redis: RedisServer, fcm: FcmStandIn, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {
        "MQCHAT_REDIS__URL": redis.url, "MQCHAT_DATA_DIR": str(tmp / "data"),
        "MQCHAT_PUSH__FCM_SERVICE_ACCOUNT_FILE": str(fcm.service_account), "MQCHAT_PUSH__FCM_ENDPOINT": fcm.endpoint,
        "MQCHAT_PUSH__FCM_CONCURRENCY": "4", "MQCHAT_PUSH__CLAIM_IDLE_S": "1", "MQCHAT_PUSH__REQUEST_TIMEOUT_S": "5",
    }
    with log.open("ab") as fh:
        return subprocess.Popen([sys.executable, "-m", "workers.push"], env=env, cwd=ROOT, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)


async def test_killing_a_push_worker_mid_batch_loses_nothing_and_repeats_only_what_was_in_flight(
        tmp_path: Path, redis_server: RedisServer, fcm_standin: FcmStandIn) -> None:
    redis = RedisClient.from_url(redis_server.url)
    push = PushState(redis)
    users = [f"u{i:02d}" for i in range(40)]
    for u in users:
        await push.register(u, "phone", PushRegistration(platform="fcm", token=f"token-{u}-" + "k" * 40))
    now = time.time_ns() // 1_000_000
    await push.ensure_groups()
    await push.enqueue_sends([
        SendJob(key=f"9:{u}:phone", message_id="9", user=u, device="phone", channel="c1", epoch=1, seq=1,
                sender="u99", kind="text", body="hello", badge=1, ts=now, first_ms=now) for u in users])
    fcm_standin.recorder.default = Reply(delay_s=0.3)  # four in flight at any time, ~13 pushes/s
    log = tmp_path / "push.log"
    first = start_push_worker(tmp_path, redis_server, fcm_standin, log)
    try:
        await wait_for(lambda: len(fcm_standin.recorder.received) >= 10, 30)
        os.killpg(first.pid, signal.SIGKILL)  # mid-batch: all 40 were read in one batch
        first.wait(10)
        in_flight_at_kill = len(fcm_standin.recorder.received)
        assert in_flight_at_kill < len(users)
        before_kill = {r.token for r in fcm_standin.recorder.received}
        fcm_standin.recorder.default = Reply()
        second = start_push_worker(tmp_path, redis_server, fcm_standin, log)
        try:
            await drained(redis.driver, timeout=30)
            dead_letters = await push.dead_letters()
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(20) == 0
    finally:
        if first.poll() is None:
            first.kill()
        await redis.close()
    times = Counter(r.token for r in fcm_standin.recorder.received)
    assert set(times) == {f"token-{u}-" + "k" * 40 for u in users}, "a push was lost"
    twice = {t for t, n in times.items() if n > 1}
    assert max(times.values()) <= 2
    # Every push whose answer could not reach the dead worker is repeated; so may be one whose answer
    # reached it just before the kill, before it recorded the push as done. Nothing the second
    # worker sent for the first time is repeated.
    lost = set(fcm_standin.recorder.answers_lost)
    assert lost, "the kill should have caught requests in flight"
    assert lost <= twice <= before_kill
    assert dead_letters == []



async def test_without_credentials_pushes_are_recorded(system: System) -> None:
    api = Api(system.api)
    try:
        w = await make_world(api)
        token = "bob-fcm-" + "r" * 100
        await register(api, w.bob_phone.token, {"platform": "fcm", "token": token})
        async with Device(w.alice_phone) as alice:
            await alice.send(w.channel, "recorded, not sent")
        record = system.data_dir / "push-recorded.jsonl"
        await wait_for(lambda: record.exists() and record.read_text().strip() != "")
        [line] = [json.loads(x) for x in record.read_text().splitlines()]
        assert (line["platform"], line["user"], line["channel"], line["badge"]) == ("fcm", w.bob, w.channel, 1)
        assert line["text"] == "recorded, not sent"
        assert token not in record.read_text()
    finally:
        await api.aclose()
