"""``python -m bench.shared_intake``: broker deliveries per send with 1, 2 and 3 bridges.

The bridges are stand-ins (one MQTT client each, the bridge's subscriptions and forwarding rule,
no store), so the figure is the broker's work for the intake alone:

    plain    every bridge subscribes ``in/+/+/+``: each send is delivered to every bridge
    shared   the bridges share ``$share/bridges/in/+/+/+`` and, as with ``bridge.coordinate``,
             forward a send whose channel another bridge owns to ``bridge/fwd/{owner}/...``

Deliveries are counted at the bridges (every PUBLISH the broker wrote to one of them); sends go
out at QoS 1 from one device client, spread over ``--channels`` channels. Usage::

    python -m bench.shared_intake --target mqchat --sends 2000
    python -m bench.shared_intake --target mosquitto --sends 2000
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import zlib
from pathlib import Path

import aiomqtt

from bench.targets import running
from mqchat import topics


def owner(channel: str, ids: list[str]) -> str:
    """A fixed owner per channel (the bridge uses rendezvous hashing over partitions; any even
    spread gives the same forwarded share, (N-1)/N)."""
    return ids[zlib.crc32(channel.encode()) % len(ids)]


async def measure(port: int, bridges: int, mode: str, sends: int, channels: int) -> tuple[float, float]:
    """Run one configuration; returns (broker deliveries per send, forwarded per send)."""
    ids = [f"b{i}" for i in range(bridges)]
    received: dict[str, int] = {}
    counts = {"deliveries": 0, "forwarded": 0}
    clients = [aiomqtt.Client("127.0.0.1", port, identifier=f"bench-{b}", max_inflight_messages=1000) for b in ids]
    intake = topics.SEND_FILTER if mode == "plain" else topics.shared("bridges", topics.SEND_FILTER)
    done = asyncio.Event()

    async def bridge(client: aiomqtt.Client, me: str) -> None:
        async for message in client.messages:
            counts["deliveries"] += 1
            topic = message.topic.value
            inner = topics.unforward(topic)
            channel = (inner or topic).rsplit("/", 1)[1]
            if mode == "shared" and inner is None:
                target = owner(channel, ids)
                if target != me:
                    counts["forwarded"] += 1
                    await client.publish(topics.forward_topic(target, topic), message.payload, qos=1)
                    continue
            if mode == "plain" and owner(channel, ids) != me:
                continue  # not this bridge's channel: ignored, as the bridge does
            received[topic] = received.get(topic, 0) + 1
            if sum(received.values()) >= sends:
                done.set()

    for client, me in zip(clients, ids, strict=True):
        await client.__aenter__()
        await client.subscribe(intake, qos=1)
        if mode == "shared":
            await client.subscribe(topics.forward_filter(me), qos=1)
    tasks = [asyncio.create_task(bridge(c, me)) for c, me in zip(clients, ids, strict=True)]
    try:
        async with aiomqtt.Client("127.0.0.1", port, identifier="bench-device", max_inflight_messages=100) as dev:
            for i in range(sends):
                channel = f"c{i % channels}"
                await dev.publish(topics.send("u1", "d1", channel), b"x" * 64, qos=1)
            async with asyncio.timeout(60):
                await done.wait()
        await asyncio.sleep(0.2)  # late duplicates would show up here
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.__aexit__(None, None, None)
    handled = sum(received.values())
    assert handled == sends, f"{mode}/{bridges}: {handled} sends handled by their owner, expected {sends}"
    return counts["deliveries"] / sends, counts["forwarded"] / sends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=("mqchat", "mosquitto"), default="mqchat")
    parser.add_argument("--sends", type=int, default=2000)
    parser.add_argument("--channels", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(f"target {args.target}, {args.sends} sends over {args.channels} channels")
        print(f"{'bridges':>7} {'mode':>7} {'deliveries/send':>16} {'forwarded/send':>15} {'s':>6}")
        for n in (1, 2, 3):
            for mode in ("plain", "shared"):
                with running(args.target, Path(tmp) / f"{mode}-{n}") as broker:
                    started = time.monotonic()
                    per_send, forwarded = asyncio.run(measure(broker.port, n, mode, args.sends, args.channels))
                    print(f"{n:>7} {mode:>7} {per_send:>16.3f} {forwarded:>15.3f} {time.monotonic() - started:>6.1f}")


if __name__ == "__main__":
    main()
