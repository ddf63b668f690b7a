"""Push benchmark body: fan-out decisions/s for a large channel, and pushes/s through the real senders.

Run by ``python -m bench.push`` (which starts a private Redis and the provider stand-ins and
passes settings through the environment); runnable alone as ``python -m bench.push_measure`` with
``MQCHAT_REDIS__URL``, ``MQCHAT_DATA_DIR`` and the ``MQCHAT_PUSH__*`` provider settings set.
Prints one JSON object.

* **fan-out**: a channel of ``--members`` members in the SQLite directory; a fraction online, a
  fraction muted, the rest offline with one registered device each. Each fan-out job decides for
  every member (pipelined Redis reads per batch), computes badges for those who get a push and
  enqueues their send jobs. Reported: member decisions per second.
* **send**: ``--pushes`` send jobs per platform through the real FCM (pyfcm) and APNs (aioapns)
  pushers, with the re-check, settle and acknowledgement of each: pushes per second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from contextlib import AsyncExitStack
from typing import Any

from mqchat.config import load_settings
from mqchat.storage.base import StoredMessage
from mqchat.storage.factory import open_directory, open_message_store
from mqchat.storage.push_state import Platform, PushRegistration, PushState, SendJob
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.redis_state import RedisState
from workers.fanout import Fanout, FanoutConfig, FanoutJob
from workers.push.sender import Sender, SenderConfig
from workers.push.service import make_pushers, retry_policy


async def _fanout(settings: Any, state: RedisState, push: PushState, members: int, jobs: int) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        directory = await open_directory(settings)
        stack.push_async_callback(directory.close)
        store = await open_message_store(settings)
        stack.push_async_callback(store.close)
        sender = await directory.create_user("bench-sender", "x", now_ms=0)
        channel, _ = await directory.create_channel("group", "bench", sender.user_id, [], now_ms=0)
        users = []
        for i in range(members):
            created = await directory.create_user(f"bench-{i:06d}", "x", now_ms=0)
            await directory.add_member(channel.channel_id, created.user_id, now_ms=0)
            users.append(created.user_id)
        now = time.time_ns() // 1_000_000
        online = [(u, f"d|{i}", "connect", "online") for i, u in enumerate(users) if i % 10 == 0]
        await state.presence_events(online, now_ms=now, ttl_ms=3_600_000)  # type: ignore[arg-type]
        for i, u in enumerate(users):
            await push.register(u, "phone", PushRegistration(platform="fcm" if i % 2 else "apns",
                                                             token=f"bench-token-{i:06d}-" + "t" * 40))
            if i % 10 == 1:
                await push.set_muted(u, channel.channel_id, True)
        await state.mark_read_many([(u, channel.channel_id, 1, 0) for u in users])
        fanout = Fanout(push, directory, store, "bench-fanout", FanoutConfig(batch=settings.push.fanout_batch))
        await push.ensure_groups()
        timings = []
        made = 0
        for seq in range(1, jobs + 1):
            m = StoredMessage(id=seq, channel=channel.channel_id, seq=seq, epoch=1, sender=sender.user_id,
                              device="d", cmid=f"b{seq}", ts=now, kind="text", body="benchmark message")
            await store.append([m])
            await state.enqueue_fanout([m])
            [(entry_id, fields)] = await push.read_fanout_jobs("bench-fanout", count=1, block_ms=1000)
            started = time.perf_counter()
            made += await fanout.fan_out(entry_id, FanoutJob.from_fields(fields))
            timings.append(time.perf_counter() - started)
        await push.clear_sends()
        best = min(timings)
        return {"members": members, "jobs": jobs, "send_jobs_made": made, "counts": dict(fanout.counts),
                "seconds_per_job": [round(t, 3) for t in timings],
                "decisions_per_s_best": round(members / best), "decisions_per_s_mean": round(
                    members * len(timings) / sum(timings))}


async def _send(settings: Any, push: PushState, platform: Platform, pushes: int) -> dict[str, Any]:
    pushers = make_pushers(settings)
    try:
        now = time.time_ns() // 1_000_000
        for i in range(pushes):
            await push.register(f"s{i}", "phone", PushRegistration(platform=platform, token=f"send-{i:06d}-" + "s" * 40,
                                                                   app="com.example.bench"))
        await push.enqueue_sends([SendJob(key=f"{platform}:{i}", message_id="1", user=f"s{i}", device="phone",
                                          channel="cbench", epoch=1, seq=1, sender="x", kind="text", body="hi",
                                          badge=1, ts=now, first_ms=now) for i in range(pushes)])
        sender = Sender(push, pushers, f"bench-{platform}",
                        SenderConfig(batch=settings.push.send_batch, policy=retry_policy(settings.push)))
        await push.ensure_groups()
        started = time.perf_counter()
        done = 0
        while done < pushes:
            entries = await push.read_sends(f"bench-{platform}", count=settings.push.send_batch, block_ms=100)
            if not entries:
                break
            await sender.process(entries)
            done += len(entries)
        elapsed = time.perf_counter() - started
        return {"platform": platform, "pushes": pushes, "seconds": round(elapsed, 3),
                "pushes_per_s": round(pushes / elapsed), "counts": dict(sender.counts)}
    finally:
        for p in pushers.values():
            await p.aclose()


async def run(members: int, jobs: int, pushes: int) -> dict[str, Any]:
    """Both measurements, with settings from the environment."""
    settings = load_settings()
    if not settings.redis.url:
        raise SystemExit("MQCHAT_REDIS__URL is required")
    redis = RedisClient.from_url(settings.redis.url, settings.redis.key_prefix)
    state, push = RedisState(redis), PushState(redis)
    try:
        report: dict[str, Any] = {"fanout": await _fanout(settings, state, push, members, jobs)}
        report["send"] = [await _send(settings, push, p, pushes) for p in ("fcm", "apns")]
        report["settings"] = {"fanout_batch": settings.push.fanout_batch, "send_batch": settings.push.send_batch,
                              "fcm_concurrency": settings.push.fcm_concurrency,
                              "apns_concurrency": settings.push.apns_concurrency}
        return report
    finally:
        await redis.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.push_measure")
    p.add_argument("--members", type=int, default=10_000)
    p.add_argument("--jobs", type=int, default=3)
    p.add_argument("--pushes", type=int, default=2000)
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.members, args.jobs, args.pushes))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
