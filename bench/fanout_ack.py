"""Does a small message wait behind a big fan-out? (``python -m bench.fanout_ack --subscribers 5000``)

The broker alone (``mqchat broker --no-auth`` on a free loopback port), ``subscribers`` QoS 1
subscribers of ``fan/big`` (one asyncio process, each acknowledges at once), an observer of
``fan/ack``, and a publisher that every ``1 / rate`` seconds sends what the bridge sends for one
chat message: the channel message on ``fan/big`` and, right behind it on the same connection, the
sender's ack on ``fan/ack``. Reported: publish → the observer's copy of the ack (p50/p99/max),
publish → the last subscriber's copy of the big message (p50/max), and the broker's CPU per
delivery (``/proc``). Bounded: ``messages`` messages, then 5 s for the last deliveries.
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

from bench import targets
from harness.ports import raise_fd_limit
from mqchat.mqtt import codec


class _Client(asyncio.Protocol):
    """A subscriber: acknowledges every QoS 1 PUBLISH and notes when each payload arrived."""

    def __init__(self, seen: dict[bytes, float] | None, on_any: dict[bytes, float]) -> None:
        self.reader = codec.FrameReader(1 << 20)
        self.transport: Any = None
        self.seen = seen
        self.last = on_any
        self.ready = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        acks = []
        for first, body in self.reader.feed(data):
            kind = first >> 4
            if kind == codec.PUBLISH:
                p = codec.decode_publish(first & 0x0F, body)
                if p.qos:
                    acks.append(codec.encode_ack(codec.PUBACK, p.packet_id))
                key = p.payload[:16]
                if self.seen is not None:
                    self.seen.setdefault(key, now)
                prev = self.last.get(key)
                if prev is None or now > prev:
                    self.last[key] = now
            elif kind == codec.SUBACK and not self.ready.done():
                self.ready.set_result(None)
        if acks:
            self.transport.write(b"".join(acks))


async def _connect(port: int, client_id: str, topic: str, seen: dict[bytes, float] | None,
                   last: dict[bytes, float]) -> _Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(lambda: _Client(seen, last), "127.0.0.1", port)
    client.transport.write(codec.encode_connect(client_id, keepalive=300, clean_session=True)
                           + codec.encode_subscribe(1, [(topic, 1)]))
    await asyncio.wait_for(client.ready, 30)
    return client


async def measure(port: int, pid: int, subscribers: int, messages: int, rate: float, *,
                  settle_s: float = 5.0) -> dict[str, Any]:
    big_last: dict[bytes, float] = {}
    ack_seen: dict[bytes, float] = {}
    crowd = []
    for start in range(0, subscribers, 200):
        crowd += await asyncio.gather(*(_connect(port, f"sub-{i}", "fan/big", None, big_last)
                                        for i in range(start, min(subscribers, start + 200))))
    observer = await _connect(port, "observer", "fan/ack", ack_seen, {})
    pub = await _connect(port, "publisher", "fan/none", None, {})
    sent: dict[bytes, float] = {}
    cpu0, t0 = targets.proc_cpu_s(pid), time.monotonic()
    for i in range(messages):
        key = f"m{i:06d}".encode().ljust(16, b".")
        big = codec.encode_publish(codec.encode_topic("fan/big"), key + b"x" * 400, 1, False, (2 * i) % 65535 + 1)
        ack = codec.encode_publish(codec.encode_topic("fan/ack"), key, 1, False, (2 * i + 1) % 65535 + 1)
        sent[key] = time.monotonic()
        pub.transport.write(big + ack)
        await asyncio.sleep(1 / rate)
    await asyncio.sleep(settle_s)  # the last deliveries of the last messages
    cpu = targets.proc_cpu_s(pid) - cpu0
    wall = time.monotonic() - t0
    for c in (*crowd, observer, pub):
        c.transport.close()
    ack_ms = sorted((ack_seen[k] - t) * 1000 for k, t in sent.items() if k in ack_seen)
    last_ms = sorted((big_last[k] - t) * 1000 for k, t in sent.items() if k in big_last)

    def pct(xs: list[float], q: float) -> float | None:
        return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2) if xs else None

    deliveries = messages * (subscribers + 1)
    return {"subscribers": subscribers, "messages": messages, "rate": rate,
            "ack_p50_ms": pct(ack_ms, 0.5), "ack_p99_ms": pct(ack_ms, 0.99), "ack_max_ms": pct(ack_ms, 1.0),
            "last_member_p50_ms": round(statistics.median(last_ms), 2) if last_ms else None,
            "last_member_max_ms": pct(last_ms, 1.0), "acks_seen": len(ack_ms),
            "broker_cpu_s": round(cpu, 2), "broker_us_per_delivery": round(1e6 * cpu / deliveries, 2),
            "wall_s": round(wall, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fanout_ack", description=__doc__.split("\n\n")[0])
    p.add_argument("--subscribers", type=int, default=5000)
    p.add_argument("--messages", type=int, default=40)
    p.add_argument("--rate", type=float, default=2.0, help="messages/s")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if args.subscribers < 1 or args.messages < 1 or args.rate <= 0:
        p.error("--subscribers and --messages must be at least 1, --rate above 0")
    raise_fd_limit()
    with tempfile.TemporaryDirectory() as tmp, targets.running("mqchat", Path(tmp)) as broker:
        result = asyncio.run(measure(broker.port, broker.pid, args.subscribers, args.messages, args.rate))
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
