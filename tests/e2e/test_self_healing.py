"""`mqchat up` heals itself: each of its processes is killed in turn while devices keep sending.

The bridge, the broker, the API, the workers and Redis are SIGKILLed one at a time under a steady
load of sends. Devices behave as apps do: an unacked send is retried with the same cmid, a lost
connection is re-established with backoff. After every kill the supervisor restarts the process and
sends flow again; at the end every send was acked, history holds each exactly once, in one
gap-free order, at the seq its ack named.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from harness.client import Device, Session
from harness.http import ApiError
from mqchat import schema
from tests.conftest import System, children_of
from tests.e2e.conftest import World
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e

#: What to kill, and how to recognise it among `mqchat up`'s children (its command line).
VICTIMS = {"bridge": "-m bridge", "broker": "-m broker", "api": "-m api", "workers": "-m workers",
           "redis": "redis-server"}


def child_pid(system: System, marker: str) -> int | None:
    assert system.proc is not None
    for pid in children_of(system.proc.pid):
        with contextlib.suppress(OSError):
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                return pid
    return None


@dataclass
class Sender:
    """A device that keeps sending, as an app's outbox does: retry with the same cmid until acked."""

    session: Session
    channel: str
    acked: dict[str, schema.Ack] = field(default_factory=dict)
    reconnects: int = 0
    sent: int = 0

    async def run(self, stop: asyncio.Event, interval_s: float) -> None:
        n = 0
        pending: str | None = None
        while not stop.is_set():
            try:
                async with Device(self.session, ack_timeout_s=2.0) as device:
                    while not stop.is_set():
                        if pending is None:
                            pending = f"{self.session.device_id}-{n}"
                            n += 1
                        ack = await device.send(self.channel, f"load {pending}", cmid=pending, retries=0)
                        assert ack.ok, ack
                        self.acked[pending] = ack
                        pending = None
                        self.sent += 1
                        await asyncio.sleep(interval_s)  # the load's pace, not a wait for a condition
            except (aiomqtt.MqttError, TimeoutError, OSError):
                self.reconnects += 1
                await asyncio.sleep(0.2)  # reconnect backoff
        # finish the message in flight, so nothing is left unacked
        deadline = time.monotonic() + 60
        while pending is not None and time.monotonic() < deadline:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError, OSError):
                async with Device(self.session, ack_timeout_s=2.0) as device:
                    self.acked[pending] = await device.send(self.channel, f"load {pending}", cmid=pending, retries=2)
                    pending = None
        assert pending is None, f"{pending} never acked"


@pytest.mark.timeout(300)  # five kills, each waiting for the restart and for sends to flow again
async def test_every_process_killed_in_turn_under_load_heals_with_nothing_lost(system: System, world: World) -> None:
    senders = [Sender(world.alice_phone, world.channel), Sender(world.bob_phone, world.channel),
               Sender(world.alice_tablet, world.channel)]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(s.run(stop, interval_s=0.05), name=f"sender.{i}") for i, s in enumerate(senders)]
    log_before = system.log.read_text()
    try:
        for name, marker in VICTIMS.items():
            await wait_for(lambda: all(s.sent > 0 for s in senders), within=60)
            counts = [s.sent for s in senders]
            pid = child_pid(system, marker)
            assert pid is not None, f"{name} is not running"
            os.kill(pid, signal.SIGKILL)

            def replaced(marker: str = marker, old: int = pid) -> bool:
                return child_pid(system, marker) not in (None, old)

            def flowing(before: list[int] = counts) -> bool:
                return all(s.sent > n + 3 for s, n in zip(senders, before, strict=True))

            await wait_for(replaced, within=60)  # the supervisor starts a new one ...
            await wait_for(flowing, within=90)  # ... and every device's sends are acked again
    finally:
        stop.set()
        await asyncio.gather(*tasks)

    log = system.log.read_text()[len(log_before):]
    for name in VICTIMS:
        assert f"restarting {name}" in log, f"{name} was not restarted by the supervisor"
    assert system.proc is not None
    assert system.proc.poll() is None, "mqchat up stopped"

    acked = {(s.session.user_id, cmid): ack for s in senders for cmid, ack in s.acked.items()}
    async def api_answers() -> bool:  # the API may still be coming back from its own restart
        try:
            await world.api.history(world.alice_phone.token, world.channel, limit=1)
        except ApiError:
            return False
        return True

    await wait_for(api_answers, within=60, what="the API answering", interval=0.5)
    messages: list[dict[str, Any]] = []
    before: int | None = None
    while True:  # the whole channel, oldest first
        page = await world.api.history(world.alice_phone.token, world.channel, limit=200,
                                       **({"before": before} if before else {}))
        messages = page["messages"] + messages
        if not page["messages"] or not page["has_more"]:
            break
        before = page["messages"][0]["seq"]
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(1, len(seqs) + 1)), "history has a gap or a duplicate seq"
    stored = {(m["sender"], m["cmid"]): m for m in messages}
    assert len(stored) == len(messages), "a send is stored twice"
    missing = set(acked) - set(stored)
    assert not missing, f"acked but not in history: {sorted(missing)[:5]}"
    for key, ack in acked.items():
        assert stored[key]["seq"] == ack.seq, f"{key}: ack said seq {ack.seq}, history has {stored[key]['seq']}"
    assert len(acked) > 100
