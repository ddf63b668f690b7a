"""Presence benchmark (``python -m bench.presence``): connect/disconnect churn through the whole system,
and what it costs Redis, on the embedded broker (its plugin writes the leases) and on Mosquitto (the
workers' ingester writes them from the devices' status publishes), in the same run.

For each broker: starts a private redis-server and ``mqchat up`` on free loopback ports (``--broker``
with a Mosquitto started here), creates ``users`` users who share one channel, connects a watcher
subscribed to every user's presence topic, then makes each user connect and disconnect ``cycles``
times as docs/protocol.md asks on every broker (a last will ``offline`` naming the connection,
``online`` after CONNECT, ``offline`` before DISCONNECT). Reports presence changes observed per
second, the connect→online and disconnect→offline latency seen by the watcher, and Redis commands
per connect+disconnect (from ``INFO commandstats``, so every process's Redis traffic is counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
import redis.asyncio as aioredis
from rich.console import Console

from harness.client import NODELAY, Api, Session
from harness.redis import RedisServer
from harness.system import launch
from mqchat import topics


async def _commandstats(r: aioredis.Redis) -> dict[str, int]:
    info = await r.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in info.items()}


BROKERS = ("embedded", "mosquitto")


async def run(users: int, cycles: int, broker: str = "embedded") -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mqchat-presence-") as tmp, RedisServer(Path(tmp)) as redis_server, \
            launch(env={"MQCHAT_REDIS__URL": redis_server.url, "MQCHAT_RATELIMIT__ENABLED": "false",
                        "MQCHAT_PUSH__ENABLED": "false", "MQCHAT_SEARCH__ENABLED": "false"},
                   workdir=Path(tmp), mosquitto=broker == "mosquitto") as system:
        r = aioredis.Redis(port=redis_server.port)
        try:
            api = Api(system.api)
            sessions: list[Session] = []
            for i in range(users):
                await api.create_user(f"pres{i}", "presence-password")
                sessions.append(await api.login(f"pres{i}", "presence-password", "dev"))
            watcher_user = sessions[0]
            await api.create_channel(watcher_user.token, "group", [s.user_id for s in sessions[1:]], name="all")
            await api.aclose()
            watch_login = sessions[0]
            mqtt = system.mqtt_port
            seen: dict[str, list[tuple[str, float]]] = {}
            async with aiomqtt.Client("127.0.0.1", mqtt, identifier=f"{watch_login.user_id}:watch",
                                      username=watch_login.user_id,
                                      password=await _token(system.api, "pres0", "watch"),
                                      socket_options=NODELAY) as watcher:
                for s in sessions[1:]:
                    await watcher.subscribe(topics.user_presence(s.user_id), qos=1)

                async def read() -> None:
                    async for msg in watcher.messages:
                        user = msg.topic.value.split("/")[1]
                        status = json.loads(bytes(msg.payload))["status"]
                        seen.setdefault(user, []).append((status, time.perf_counter()))

                reader = asyncio.create_task(read())
                before = await _commandstats(r)
                on_lat: list[float] = []
                off_lat: list[float] = []
                start = time.perf_counter()

                async def churn(s: Session) -> None:
                    topic = topics.device_presence(s.user_id, s.device_id)
                    for i in range(cycles):
                        conn = f"b{i}"
                        will = aiomqtt.Will(topic, _status("offline", conn, ts=0), qos=1, retain=True)
                        t0 = time.perf_counter()
                        async with aiomqtt.Client("127.0.0.1", mqtt, identifier=f"{s.user_id}:{s.device_id}",
                                                  username=s.user_id, password=s.token, socket_options=NODELAY,
                                                  will=will) as device:
                            await device.publish(topic, _status("online", conn), qos=1, retain=True)
                            on_lat.append(await _wait(seen, s.user_id, "online", t0))
                            t1 = time.perf_counter()
                            await device.publish(topic, _status("offline", conn), qos=1, retain=True)
                        off_lat.append(await _wait(seen, s.user_id, "offline", t1))

                await asyncio.gather(*(churn(s) for s in sessions[1:]))
                elapsed = time.perf_counter() - start
                after = await _commandstats(r)
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        finally:
            await r.aclose()
    transitions = 2 * cycles * (users - 1)
    per = {cmd: round((after.get(cmd, 0) - before.get(cmd, 0)) / (cycles * (users - 1)), 2)
           for cmd in sorted(set(after) | set(before)) if after.get(cmd, 0) != before.get(cmd, 0)}
    return {
        "broker": broker, "users": users - 1, "cycles": cycles, "presence_changes": transitions,
        "changes_per_s": round(transitions / elapsed, 1),
        "online_latency_ms": _pcts(on_lat), "offline_latency_ms": _pcts(off_lat),
        "redis_calls_per_connect_disconnect": per,
        "redis_calls_total_per_connect_disconnect": round(sum(per.values()), 2),
    }


def _status(status: str, conn: str, *, ts: int | None = None) -> bytes:
    return json.dumps({"status": status, "ts": int(time.time() * 1000) if ts is None else ts,
                       "conn": conn}).encode()


def _pcts(xs: list[float]) -> dict[str, float]:
    xs = sorted(x * 1000 for x in xs)
    return {"p50": round(statistics.median(xs), 2), "p99": round(xs[int(0.99 * (len(xs) - 1))], 2),
            "max": round(xs[-1], 2)}


async def _token(api_url: str, username: str, device: str) -> str:
    api = Api(api_url)
    try:
        return (await api.login(username, "presence-password", device)).token
    finally:
        await api.aclose()


async def _wait(seen: dict[str, list[tuple[str, float]]], user: str, status: str, since: float) -> float:
    async with asyncio.timeout(30):
        while True:
            for st, t in reversed(seen.get(user, [])):
                if t >= since and st == status:
                    return t - since
            await asyncio.sleep(0.002)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.presence",
                                description="connect/disconnect churn: presence latency and Redis cost")
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--cycles", type=int, default=10)
    p.add_argument("--broker", choices=(*BROKERS, "both"), default="both",
                   help="embedded: the broker's plugin writes leases; mosquitto: the workers' ingester does")
    args = p.parse_args(argv)
    reports = []
    for broker in BROKERS if args.broker == "both" else (args.broker,):
        with Console(stderr=True).status(f"presence churn on {broker}: {args.users} users x {args.cycles} cycles"):
            reports.append(asyncio.run(run(args.users + 1, args.cycles, broker)))
    print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
