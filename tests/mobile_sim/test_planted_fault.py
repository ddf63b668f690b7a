"""The checker fails loudly on a planted fault (issue #7, "Done when").

Each test starts broker, API and a bridge as separate processes on free ports (``mqchat up`` always
runs its own bridge): the real ``python -m bridge``, or ``python -m tests.mobile_sim.broken_bridge``
with a fault planted. The same small scenario runs against each: five devices of three users in
one channel, one device away for the first round and back (with its resume sync) for the second,
every send acked, then every device disconnects and does a final ``POST /v1/sync``. What the devices
saw is recorded into :class:`~mobile_sim.observe.Observations` and judged by
:func:`mobile_sim.checker.check`: no violation against the real bridge, and exactly the planted
fault, with the ids the broken bridge reports, against the broken one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.client import Api, Device, Session
from harness.ports import free_port
from mobile_sim import checker
from mobile_sim.observe import Delivery, Observations, Online, Send, Synced
from mqchat import schema
from mqchat.storage.sqlite import SqliteDirectory, SqliteMessageStore
from tests.conftest import ROOT, RedisServer
from tests.mobile_sim.broken_bridge import FAULT_ENV, REPORT_ENV

pytestmark = pytest.mark.e2e

PASSWORD = "correct horse battery"
#: (user, device) of the scenario; bob's laptop is away during the first round.
DEVICES = [("alice", "phone"), ("alice", "tablet"), ("bob", "phone"), ("bob", "laptop"), ("carol", "phone")]
ROUND_1 = ["alice:phone", "bob:phone", "carol:phone"] * 2
ROUND_2 = ["alice:tablet", "bob:laptop", "carol:phone"] * 2
NTH = 4
"""The faults hit the 4th message: seq 4 of the channel, sent while bob's laptop is away."""


# --- the system: broker, API and a (broken) bridge -----------------------------------------------


@dataclass
class Stack:
    api: str
    data: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def log(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.data.glob("*.log")))

    def stop(self) -> None:
        for proc in reversed(self.procs.values()):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _spawn(stack: Stack, name: str, module: str, env: dict[str, str]) -> None:
    with (stack.data / f"{name}.log").open("ab") as log:
        stack.procs[name] = subprocess.Popen([sys.executable, "-m", module], env=env, cwd=ROOT, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)


async def _ready(stack: Stack, *names: str) -> None:
    async with asyncio.timeout(45):
        while not all((stack.data / "run" / f"{n}.ready").exists() for n in names):
            for n in names:
                if stack.procs[n].poll() is not None:
                    raise RuntimeError(f"{n} exited while starting:\n{stack.log()}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, redis: RedisServer, fault: str | None) -> AsyncIterator[Stack]:
    data = tmp_path / "data"
    await (await SqliteDirectory(data / "directory.db").open()).close()
    await (await SqliteMessageStore(data / "messages.db").open()).close()
    http = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MQCHAT_")} | {
        "MQCHAT_DATA_DIR": str(data), "MQCHAT_MQTT__PORT": str(free_port()), "MQCHAT_MQTT__WS_PORT": str(free_port()),
        "MQCHAT_HTTP__PORT": str(http), "MQCHAT_AUTH__SECRET": "s" * 40, "MQCHAT_REDIS__URL": redis.url,
        "MQCHAT_LOG_LEVEL": "WARNING"}
    stack = Stack(f"http://127.0.0.1:{http}", data)
    try:
        _spawn(stack, "broker", "broker", env)
        await _ready(stack, "broker")
        _spawn(stack, "api", "api", env)
        if fault is None:
            _spawn(stack, "bridge", "bridge", env)
        else:
            _spawn(stack, "bridge", "tests.mobile_sim.broken_bridge",
                   env | {FAULT_ENV: fault, REPORT_ENV: str(tmp_path / "fault.jsonl")})
        await _ready(stack, "api", "bridge")
        yield stack
    finally:
        stack.stop()


# --- recording what the devices see --------------------------------------------------------------


class _LiveLog(list[schema.ChannelMessage]):
    """One channel's list in :attr:`Device.received`: each message appended is also recorded."""

    def __init__(self, device: str, obs: Observations) -> None:
        super().__init__()
        self.device, self.obs = device, obs

    def append(self, m: schema.ChannelMessage) -> None:
        super().append(m)
        self.obs.deliveries.append(Delivery(self.device, m.channel, m.id, m.seq, m.sender, time.monotonic(), "live",
                                            cmid=m.cmid))


class _Received(defaultdict[str, list[schema.ChannelMessage]]):
    def __init__(self, device: str, obs: Observations) -> None:
        super().__init__()
        self.device, self.obs = device, obs

    def __missing__(self, channel: str) -> list[schema.ChannelMessage]:
        log = self[channel] = _LiveLog(self.device, self.obs)
        return log


@dataclass
class Recorder:
    """Devices driven through :class:`harness.client.Device`, recorded into ``obs``."""

    api: str
    channel: str
    sessions: dict[str, Session]
    obs: Observations = field(default_factory=Observations)
    connected: dict[str, tuple[Device, Online]] = field(default_factory=dict)

    async def connect(self, name: str) -> None:
        device = Device(self.sessions[name], received=_Received(name, self.obs))
        await device.__aenter__()
        online = Online(name, time.monotonic())
        self.obs.online.append(online)
        self.connected[name] = (device, online)
        await device.join(self.channel)

    async def disconnect(self, name: str) -> None:
        device, online = self.connected.pop(name)
        await device.__aexit__(None, None, None)
        online.t_closed, online.how = time.monotonic(), "disconnect"

    async def send(self, name: str, body: str) -> None:
        device, _ = self.connected[name]
        cmid = device.next_cmid()
        record = Send(name, self.channel, cmid, t_first=time.monotonic())
        self.obs.sends.append(record)
        ack = await device.send(self.channel, body, cmid=cmid)
        record.t_ack = time.monotonic()
        if ack.ok and ack.id is not None:
            record.id, record.seq = ack.id, ack.seq
            record.ack_ids.append(ack.id)
        elif ack.error is not None:
            record.error = ack.error.code

    async def sync(self, name: str) -> None:
        """``POST /v1/sync`` as docs/sync.md says: the highest seq held with no gap below it, then
        pages until ``has_more`` is false."""
        held = {d.seq: d for d in self.obs.deliveries if d.device == name and d.channel == self.channel}
        last = 0
        while last + 1 in held:
            last += 1
        cursor: list[dict[str, Any]] = [{"channel": self.channel, "epoch": 1, "last_seq": last}] if last else []
        token = self.sessions[name].token
        self.obs.syncs.append(Synced(name, time.monotonic()))
        async with httpx.AsyncClient(base_url=self.api, timeout=30,
                                     headers={"Authorization": f"Bearer {token}"}) as http:
            while True:
                r = await http.post("/v1/sync", json={"channels": cursor, "limit": 500})
                r.raise_for_status()
                (entry,) = [c for c in r.json()["channels"] if c["channel"] == self.channel]
                now = time.monotonic()
                for m in entry["messages"]:
                    self.obs.deliveries.append(Delivery(name, m["channel"], m["id"], m["seq"], m["sender"], now,
                                                        "sync", cmid=m["cmid"]))
                if not entry["has_more"] or not entry["messages"]:
                    return
                cursor = [{"channel": self.channel, "epoch": entry["epoch"], "last_seq": entry["messages"][-1]["seq"]}]

    async def settle(self, within: float = 3.0) -> None:
        """Wait until every connected device holds every acked message live, or ``within`` seconds."""
        acked = {s.id for s in self.obs.sends if s.id is not None}
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            live: dict[str, set[str]] = defaultdict(set)
            for d in self.obs.deliveries:
                live[d.device].add(d.id)
            if all(acked <= live[name] for name in self.connected):
                return
            await asyncio.sleep(0.05)


async def scenario(api_url: str) -> Recorder:
    api = Api(api_url)
    try:
        users = {u: await api.create_user(u, PASSWORD) for u in ("alice", "bob", "carol")}
        sessions = {f"{users[u]}:{d}": await api.login(u, PASSWORD, d) for u, d in DEVICES}
        alice = sessions[f"{users['alice']}:phone"]
        channel = await api.create_channel(alice.token, "group", [users["bob"], users["carol"]], name="team")
    finally:
        await api.aclose()
    rec = Recorder(api_url, channel, sessions)
    rec.obs.members[channel] = set(users.values())
    rec.obs.devices_of = {uid: [f"{uid}:{d}" for u, d in DEVICES if u == name] for name, uid in users.items()}

    def named(short: str) -> str:
        user, device = short.split(":")
        return f"{users[user]}:{device}"

    for name in sessions:
        await rec.connect(name)
    await rec.disconnect(named("bob:laptop"))  # away for the first round
    for i, who in enumerate(ROUND_1, 1):
        await rec.send(named(who), f"round 1, message {i}")
    await rec.settle()
    await rec.connect(named("bob:laptop"))  # back: subscribe first, then catch up
    await rec.sync(named("bob:laptop"))
    for i, who in enumerate(ROUND_2, 1):
        await rec.send(named(who), f"round 2, message {i}")
    await rec.settle()
    for name in list(rec.connected):
        await rec.disconnect(name)
    for name in sessions:  # the final sync every scenario ends with
        await rec.sync(name)
    return rec


# --- the tests -----------------------------------------------------------------------------------


def planted(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "fault.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def acked_at(rec: Recorder, seq: int) -> str:
    (mid,) = [s.id for s in rec.obs.sends if s.seq == seq and s.id is not None]
    return mid


async def test_the_real_bridge_passes_the_checker(tmp_path: Path, redis_server: RedisServer) -> None:
    async with running(tmp_path, redis_server, None) as stack:
        rec = await scenario(stack.api)
    verdict = checker.check(rec.obs)
    assert verdict.ok, verdict.summary()
    counts = verdict.counts
    assert counts.acked == len(ROUND_1) + len(ROUND_2) == 12
    assert counts.devices == 5
    # 4 devices get 6 live in round 1, 5 get 6 in round 2; every device must hold all 12
    assert counts.expected == 5 * 12
    assert counts.live >= 4 * 6 + 5 * 6


async def test_a_dropped_message_is_reported_lost_with_its_id(tmp_path: Path, redis_server: RedisServer) -> None:
    async with running(tmp_path, redis_server, f"drop:{NTH}") as stack:
        rec = await scenario(stack.api)
    (fault,) = planted(tmp_path)
    dropped = acked_at(rec, NTH)
    assert (fault["fault"], fault["id"], fault["seq"]) == ("drop", dropped, NTH)
    verdict = checker.check(rec.obs)
    everyone = tuple(sorted(rec.sessions))
    assert [(v.invariant, v.ids) for v in verdict.violations] == [
        (checker.NO_LOSS, (dropped, *everyone)),  # acked, never delivered live, not in history
        (checker.GAP, (dropped, *everyone)),  # the hole it leaves at seq 4 on every device
    ], verdict.summary()
    assert "FAILED: 2 violations" in verdict.summary()


async def test_two_swapped_messages_are_reported_reordered(tmp_path: Path, redis_server: RedisServer) -> None:
    async with running(tmp_path, redis_server, f"reorder:{NTH}") as stack:
        rec = await scenario(stack.api)
    (fault,) = planted(tmp_path)
    held, after = acked_at(rec, NTH), acked_at(rec, NTH + 1)
    assert (fault["fault"], fault["id"], fault["after"]) == ("reorder", held, after)
    verdict = checker.check(rec.obs)
    online_then = tuple(sorted(n for n in rec.sessions if not n.endswith(":laptop")))  # bob's laptop was away
    assert [(v.invariant, v.ids) for v in verdict.violations] == [
        (checker.REORDER, (held, after, *online_then)),  # the laptop got both from its resume sync
    ], verdict.summary()
