"""Fan-out and sender against a real Redis (a single server and a three-node cluster), with the real
pushers on the stand-ins."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from harness.push_standins.apns import ApnsStandIn
from harness.push_standins.common import Reply
from harness.push_standins.fcm import FcmStandIn
from mqchat.storage.base import StoredMessage
from mqchat.storage.memory import MemoryDirectory, MemoryMessageStore
from mqchat.storage.push_state import PushRegistration, PushState, SendJob, decode_job
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.redis_state import RedisState
from workers.fanout import Fanout, FanoutConfig, FanoutJob
from workers.push.apns import ApnsPusher
from workers.push.fcm import FcmPusher
from workers.push.policy import RetryPolicy
from workers.push.sender import Sender, SenderConfig

CHANNEL = "cteam"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[RedisClient]:
    client = RedisClient.from_url(redis_url, "t:")
    yield client
    await client.close()


@pytest.fixture
def redis_state(redis: RedisClient) -> RedisState:
    return RedisState(redis)


@pytest.fixture
def push(redis: RedisClient) -> PushState:
    return PushState(redis)


class Clock:
    def __init__(self, ms: int = 1_000_000) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


def message(seq: int, sender: str = "alice", channel: str = CHANNEL, body: str = "hi") -> StoredMessage:
    return StoredMessage(id=1000 + seq, channel=channel, seq=seq, epoch=1, sender=sender, device="phone",
                         cmid=f"m{seq}", ts=0, kind="text", body=body, count_seq=seq)


async def world(redis_state: RedisState, members: list[str]) -> tuple[MemoryDirectory, MemoryMessageStore]:
    directory, store = MemoryDirectory(), MemoryMessageStore()
    for m in members:
        await directory.add_member(CHANNEL, m, now_ms=0)
        await redis_state.mark_read(m, CHANNEL, 1, 0)
    return directory, store


async def fan_out_one(push: PushState, redis_state: RedisState, fanout: Fanout, m: StoredMessage) -> int:
    await push.ensure_groups()
    await redis_state.enqueue_fanout([m])
    [(entry_id, fields)] = await push.read_fanout_jobs("f1", block_ms=100)
    return await fanout.fan_out(entry_id, FanoutJob.from_fields(fields))


async def sends(push: PushState) -> list[SendJob]:
    raw: Any = await push._r.xrange(push.keys.push_sends)  # the stream itself, as an operator would read it
    return [decode_job(f[b"job"]) for _, f in raw]


async def test_fanout_decides_per_member_with_badges(push: PushState, redis_state: RedisState) -> None:
    directory, store = await world(redis_state, ["alice", "bob", "carol", "dave", "erin"])
    await store.append([message(1), message(2)])
    # bob: offline, one FCM device; another channel with 3 unread → badge counts both channels.
    await directory.add_member("cother", "bob", now_ms=0)
    await store.append([message(1, channel="cother"), message(2, channel="cother"), message(3, channel="cother")])
    await push.register("bob", "phone", PushRegistration(platform="fcm", token="bob-token-123"))
    # carol: online elsewhere with an APNs token → nothing.
    await push.register("carol", "ipad", PushRegistration(platform="apns", token="c" * 64))
    await redis_state.presence_event("carol", "laptop|1", "connect", now_ms=0, ttl_ms=10**9)
    # dave: muted the channel.
    await push.register("dave", "phone", PushRegistration(platform="fcm", token="dave-token-123"))
    await push.set_muted("dave", CHANNEL, True)
    # erin: offline, no devices, two devices preview off.
    # alice (the sender) has a device too and is offline: senders never get their own push.
    await push.register("alice", "phone", PushRegistration(platform="fcm", token="alice-token-1"))
    fanout = Fanout(push, directory, store, "f1", FanoutConfig(batch=2))
    made = await fan_out_one(push, redis_state, fanout, message(2))
    jobs = await sends(push)
    assert made == 1
    assert [(j.user, j.device, j.badge, j.channel, j.body) for j in jobs] == [("bob", "phone", 2 + 3, CHANNEL, "hi")]
    assert fanout.counts == {"online": 1, "muted": 1, "no_device": 1, "push": 1, "jobs": 1}
    assert (await push.pending_counts())[push.keys.push_jobs] == 0


async def test_fanout_privacy_and_preview_off_keep_text_out_of_the_queue(push: PushState,
                                                                         redis_state: RedisState) -> None:
    directory, store = await world(redis_state, ["alice", "bob"])
    await store.append([message(1, body="secret")])
    await push.register("bob", "phone", PushRegistration(platform="fcm", token="bob-token-123", preview=False))
    await push.register("bob", "tablet", PushRegistration(platform="fcm", token="bob-token-456"))
    fanout = Fanout(push, directory, store, "f1", FanoutConfig())
    await fan_out_one(push, redis_state, fanout, message(1, body="secret"))
    assert {j.device: j.body for j in await sends(push)} == {"phone": None, "tablet": "secret"}
    await push._r.delete(push.keys.push_sends)
    await store.append([message(2, body="secret")])
    await fan_out_one(push, redis_state, Fanout(push, directory, store, "f1", FanoutConfig(privacy=True)),
                      message(2, body="secret"))
    assert {j.device: j.body for j in await sends(push)} == {"phone": None, "tablet": None}


async def test_fanout_resumes_after_its_cursor_without_duplicates(push: PushState, redis_state: RedisState) -> None:
    members = [f"u{i:03d}" for i in range(25)]
    directory, store = await world(redis_state, ["alice", *members])
    await store.append([message(1)])
    for u in members:
        await push.register(u, "phone", PushRegistration(platform="fcm", token=f"{u}-token-xyz"))
    await push.ensure_groups()
    await redis_state.enqueue_fanout([message(1)])
    [(entry_id, fields)] = await push.read_fanout_jobs("dead-worker", block_ms=100)
    # The dead worker got through the first two batches of 10 before dying.
    await push.commit_fanout_batch(entry_id, [], members[9])
    [(claimed_id, fields)] = await push.claim_fanout_jobs("f2", min_idle_ms=0)
    assert claimed_id == entry_id
    made = await Fanout(push, directory, store, "f2", FanoutConfig(batch=10)).fan_out(entry_id,
                                                                                       FanoutJob.from_fields(fields))
    assert made == 15
    assert sorted(j.user for j in await sends(push)) == members[10:]
    assert await push.fanout_progress(entry_id) is None


async def test_fresh_jobs_are_fanned_out_together_as_one_by_one_would(push: PushState, redis_state: RedisState) -> None:
    """Several jobs read at once: small channels' jobs share their round trips and one transaction;
    a channel larger than a batch goes job by job. The send jobs and badges are those of one-by-one."""
    members = [f"u{i}" for i in range(4)]
    directory, store = await world(redis_state, ["alice", *members])
    big = [f"b{i:02d}" for i in range(6)]
    for u in big:
        await directory.add_member("cbig", u, now_ms=0)
    await store.append([message(1), message(2), message(3), message(1, channel="cbig")])
    for u in [*members, *big]:
        await push.register(u, "phone", PushRegistration(platform="fcm", token=f"{u}-token-xyz"))
    await redis_state.presence_event("u0", "laptop|1", "connect", now_ms=0, ttl_ms=10**9)  # online: no push
    await push.set_muted("u1", CHANNEL, True)
    await push.ensure_groups()
    await redis_state.enqueue_fanout([message(1), message(2), message(1, channel="cbig", sender="b00"),
                                      message(3, sender="u2")])
    fanout = Fanout(push, directory, store, "f1", FanoutConfig(batch=4, block_ms=100))
    entries = await push.read_fanout_jobs("f1", block_ms=100)
    assert len(entries) == 4
    left = await fanout.fan_out_many([(i, FanoutJob.from_fields(f)) for i, f in entries])
    assert [FanoutJob.from_fields(f).channel for _, f in left] == ["cbig"]  # 5 others > batch of 4
    badge = await fanout.badges(["u2", "u3"])
    assert min(badge.values()) > 0
    assert sorted((j.seq, j.user, j.badge) for j in await sends(push)) == [  # message 3 is u2's own
        (1, "u2", badge["u2"]), (1, "u3", badge["u3"]), (2, "u2", badge["u2"]), (2, "u3", badge["u3"]),
        (3, "u3", badge["u3"])]
    assert fanout.counts["jobs"] == 3
    assert (await push.pending_counts())[push.keys.push_jobs] == 1  # only the big channel's job
    for entry_id, fields in left:
        await fanout.fan_out(entry_id, FanoutJob.from_fields(fields))
    assert sorted(j.user for j in await sends(push) if j.channel == "cbig") == big[1:]
    assert (await push.pending_counts())[push.keys.push_jobs] == 0


@pytest.fixture
async def sender_env(push: PushState, fcm_standin: FcmStandIn, apns_standin: ApnsStandIn,
                     fcm_pusher: FcmPusher, apns_pusher: ApnsPusher) -> tuple[Sender, Clock]:
    clock = Clock()
    sender = Sender(push, {"fcm": fcm_pusher, "apns": apns_pusher}, "s1",
                    SenderConfig(policy=RetryPolicy(base_s=1, cap_s=10, give_up_after_s=60)), rand=lambda: 0.5,
                    clock_ms=clock)
    await push.ensure_groups()
    return sender, clock


_keys = itertools.count()


def send_job(user: str = "bob", device: str = "phone", seq: int = 5, first_ms: int = 1_000_000) -> SendJob:
    return SendJob(key=f"{next(_keys)}:{user}:{device}", message_id="77", user=user, device=device, channel=CHANNEL,
                   epoch=1, seq=seq, sender="alice", kind="text", body="hi", badge=2, ts=0, first_ms=first_ms)


async def run_once(sender: Sender, push: PushState) -> None:
    entries = await push.read_sends("s1", block_ms=100)
    await push.move_due_retries(0)
    await sender.process(entries)


async def test_sender_removes_dead_tokens(sender_env: tuple[Sender, Clock], push: PushState,
                                          fcm_standin: FcmStandIn, apns_standin: ApnsStandIn) -> None:
    sender, _ = sender_env
    await push.register("bob", "phone", PushRegistration(platform="fcm", token="bob-fcm-dead"))
    await push.register("bob", "ipad", PushRegistration(platform="apns", token="d" * 64, app="com.example.chat"))
    fcm_standin.recorder.script("bob-fcm-dead", Reply(404, "UNREGISTERED"))
    apns_standin.recorder.script("d" * 64, Reply(410, "Unregistered"))
    await push.enqueue_sends([send_job(device="phone"), send_job(device="ipad")])
    await run_once(sender, push)
    assert await push.registrations("bob") == {}
    assert sender.counts["token_dead"] == 2
    assert (await push.pending_counts())[push.keys.push_sends] == 0


async def test_a_token_refreshed_meanwhile_is_not_removed(push: PushState) -> None:
    await push.register("bob", "phone", PushRegistration(platform="fcm", token="new-token-abc"))
    assert not await push.remove_token("bob", "phone", "old-token-abc")
    assert await push.remove_token("bob", "phone", "new-token-abc")


async def test_sender_retries_temporary_errors_with_retry_after_then_delivers(
        sender_env: tuple[Sender, Clock], push: PushState, fcm_standin: FcmStandIn) -> None:
    sender, clock = sender_env
    await push.register("bob", "phone", PushRegistration(platform="fcm", token="bob-fcm-429"))
    fcm_standin.recorder.script("bob-fcm-429", Reply(429, "QUOTA_EXCEEDED", retry_after="7"))
    await push.enqueue_sends([send_job()])
    await run_once(sender, push)
    retries: Any = await push._r.zrange(push.keys.push_retry, 0, -1, withscores=True)
    [(_raw, due)] = retries
    assert due == clock.ms + 7000  # Retry-After beats the jittered 0.5 s
    assert await push.move_due_retries(clock.ms + 6999) == 0
    assert await push.move_due_retries(clock.ms + 7000) == 1
    entries = await push.read_sends("s1", block_ms=100)
    assert [j.attempt for _, j in entries] == [1]
    await sender.process(entries)
    assert [r.status for r in fcm_standin.recorder.for_token("bob-fcm-429")] == [429, 200]
    assert sender.counts["delivered"] == 1
    assert await push.retries_waiting() == 0


async def test_sender_dead_letters_after_the_horizon(sender_env: tuple[Sender, Clock], push: PushState,
                                                     apns_standin: ApnsStandIn) -> None:
    sender, clock = sender_env
    token = "e" * 64
    await push.register("bob", "ipad", PushRegistration(platform="apns", token=token))
    apns_standin.recorder.default = Reply(503, "ServiceUnavailable")
    await push.enqueue_sends([send_job(device="ipad")])
    for _ in range(20):  # bounded; each round moves the clock to the retry's due time
        entries = await push.read_sends("s1", block_ms=50)
        if entries:
            await sender.process(entries)
        due = await push._r.zrange(push.keys.push_retry, 0, 0, withscores=True)
        if not due:
            break
        clock.ms = int(due[0][1])
        await push.move_due_retries(clock.ms)
    [(_, dead)] = await push.dead_letters()
    assert dead.reason == f"gave up after {dead.job.attempt + 1} attempts: ServiceUnavailable"
    attempts = len(apns_standin.recorder.for_token(token))
    # Jitter fixed at 0.5: delays 0.5, 1, 2, 4, then the cap's 5 s, until 60 s after the first try.
    assert attempts == 1 + 4 + int((60 - 7.5) // 5)
    assert dead.job.attempt == attempts - 1
    assert (await push.pending_counts())[push.keys.push_sends] == 0


async def test_sender_dead_letters_permanent_errors_at_once(sender_env: tuple[Sender, Clock], push: PushState,
                                                            fcm_standin: FcmStandIn) -> None:
    sender, _ = sender_env
    await push.register("bob", "phone", PushRegistration(platform="fcm", token="bob-fcm-bad"))
    fcm_standin.recorder.script("bob-fcm-bad", Reply(400, "INVALID_ARGUMENT"))
    await push.enqueue_sends([send_job()])
    await run_once(sender, push)
    [(_, dead)] = await push.dead_letters()
    assert dead.reason == "INVALID_ARGUMENT"
    assert await push.retries_waiting() == 0
    assert await push.registrations("bob") != {}  # a bad message is not a dead token


async def test_sender_rechecks_online_and_read_just_before_sending(
        sender_env: tuple[Sender, Clock], push: PushState, redis_state: RedisState, fcm_standin: FcmStandIn) -> None:
    sender, _ = sender_env
    for u in ("bob", "carol", "dave"):
        await push.register(u, "phone", PushRegistration(platform="fcm", token=f"{u}-fcm-token"))
    await redis_state.presence_event("bob", "laptop|1", "connect", now_ms=0, ttl_ms=10**9)  # came online
    await redis_state.mark_read("carol", CHANNEL, 1, 5)  # read it on another device
    await push.enqueue_sends([send_job("bob"), send_job("carol"), send_job("dave"), send_job("erin")])
    await run_once(sender, push)
    assert [r.token for r in fcm_standin.recorder.received] == ["dave-fcm-token"]
    assert sender.counts == {"skipped_online": 1, "skipped_read": 1, "skipped_unregistered": 1, "delivered": 1}
