"""The scenarios: who the simulated users are, what they do, and what each one measures.

Each scenario is a coroutine ``(ctx) -> dict`` that builds its population through
:class:`mobile_sim.fleet.Fleet` (provisioning over the HTTP API), brings it online, drives
traffic and returns its own measurements; :mod:`mobile_sim.runner` wraps every scenario in the same
frame (system, monitor, quiet period, final sync, checker, report).

=================  ====================================================================================
``chat``           many small group channels; Poisson senders with bursts, reads, typing
``large-channel``  one channel of ``--members`` users (one device each); a few senders; fan-out latency
``flaky``          ``chat`` while devices lose the network at random (no DISCONNECT) and come back
``reconnect-storm`` every device drops at once, then reconnects by the table; time to full recovery
``presence-churn`` devices go to the background and come back; observers' presence must converge
``push``           part of the users in the background; they must get exactly the pushes they are due
=================  ====================================================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import random
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.http import ApiError
from mobile_sim.fleet import Fleet, SimDevice
from mobile_sim.provision import UserSpec, bounded

WORDS = ("ok", "sure", "see you at 5", "running late", "lunch?", "sounds good", "on my way", "thanks!",
         "did you see the game last night", "can you send me the file", "meeting moved to tomorrow")


@dataclass
class Options:
    """Every knob of every scenario (each scenario reads the ones it needs; see docs/simulator.md)."""

    devices: int = 200
    devices_per_user: int = 2
    channel_size: int = 8
    channels_per_user: int = 2
    senders: int = 50
    active_channels: int = 0
    """Non-zero: every device of the first N channels sends, only to those channels (overrides ``senders``)."""
    rate: float = 20.0
    """Sends per second offered, over all senders (Poisson arrivals)."""
    burst_prob: float = 0.05
    burst_size: int = 5
    read_rate: float = 2.0
    typing_rate: float = 2.0
    rich: float = 0.0
    """chat: the share of sends that are edits, deletes, reactions (add/remove) or thread replies
    instead of new texts; non-zero also records every device's fold for the checker."""
    duration: float = 30.0
    connect_rate: float = 500.0
    """Devices brought online per second at the start (0: all at once)."""
    quiet: float = 3.0
    members: int = 5000
    drop_rate: float = 2.0
    """flaky: network losses per device per minute."""
    outage: float = 3.0
    """flaky: longest outage (uniform); reconnect-storm: how long the network stays down."""
    warmup: float = 5.0
    offline_fraction: float = 0.5
    cycle: float = 8.0
    """presence-churn: mean seconds a device stays in one state."""
    observers: int = 20
    badge_sample: int = 200
    drain_timeout: float = 300.0
    """Longest wait at the end for every outbox to empty and, again, for the system to go quiet."""
    idle_measure: float = 5.0
    """Seconds of idle CPU measured after connecting."""
    seed: int | None = None
    servers: int = 0
    """chat: spread the channels over N servers, each a private channel seen through its own role
    (0: plain group channels)."""


@dataclass
class Ctx:
    fleet: Fleet
    opts: Options
    rng: random.Random
    phases: list[tuple[str, float]] = field(default_factory=list)
    """``(name, start)`` of each phase, for the report and the plots."""

    def phase(self, name: str) -> None:
        self.phases.append((name, time.monotonic()))


# -- populations -------------------------------------------------------------------------------------


def device_ids(n: int) -> list[str]:
    kinds = ("phone", "tablet", "laptop", "watch")
    return [kinds[i] if i < len(kinds) else f"dev{i}" for i in range(n)]


def group(users: Sequence[UserSpec], size: int, per_user: int, rng: random.Random) -> list[list[UserSpec]]:
    """Channels of about ``size`` members, each user in about ``per_user`` of them."""
    if len(users) <= size:
        return [list(users)] * max(1, per_user if len(users) > 1 else 1)
    groups: list[list[UserSpec]] = []
    for _ in range(per_user):
        order = list(users)
        rng.shuffle(order)
        groups += [order[i:i + size] for i in range(0, len(order), size)]
    # A last, short group joins the one before it (no channel of one).
    merged: list[list[UserSpec]] = []
    for g in groups:
        if len(g) < 2 and merged:
            merged[-1] += [u for u in g if u not in merged[-1]]
        else:
            merged.append(g)
    return merged


Grouping = Callable[[list[UserSpec]], list[list[UserSpec]]]


async def populate(ctx: Ctx, *, devices: int, per_user: int, groups_of: Grouping, name: str,
                   servers: int = 0) -> tuple[list[UserSpec], list[str], list[list[UserSpec]]]:
    """Users with ``per_user`` devices each (``devices`` in all), their channels, and the fleet's devices."""
    fleet = ctx.fleet
    ctx.phase("provision")
    n_users = math.ceil(devices / per_user)
    users = await fleet.prov.users(n_users)
    left = devices
    for u in users:
        u.devices = device_ids(min(per_user, left))
        left -= len(u.devices)
    await fleet.prov.tokens_for(users)
    groups = groups_of(users)
    if servers > 0:
        channels = await fleet.prov.server_channels(groups, servers, name)
    else:
        channels = await fleet.prov.channels(groups, name)
    by_user: dict[str, list[str]] = {}
    for channel, members in zip(channels, groups, strict=True):
        fleet.set_members(channel, {m.user_id for m in members})
        for m in members:
            by_user.setdefault(m.user_id, []).append(channel)
    for u in users:
        for d in u.devices:
            device = fleet.add(u, d, by_user.get(u.user_id, []))
            device.token = await fleet.prov.token(u, d)

    async def position(item: tuple[str, list[UserSpec]]) -> tuple[int, int]:
        channel, members = item
        return await fleet.prov.position(channel, (await fleet.prov.token(members[0], members[0].devices[0])).value)

    found = await bounded(list(zip(channels, groups, strict=True)), position, fleet.prov.concurrency)
    await fleet.init_cursors(dict(zip(channels, found, strict=True)))
    return users, channels, groups


async def bring_online(ctx: Ctx, devices: Sequence[SimDevice]) -> dict[str, Any]:
    """Connect at ``--connect-rate``; the connect rate and CPU per idle device are measured here."""
    ctx.phase("connect")
    fleet = ctx.fleet
    t0 = time.monotonic()
    mark = len(fleet.connect_ms)
    took = await fleet.connect(devices, ctx.opts.connect_rate)
    connected = [ms for _, ms in fleet.connect_ms[mark:]]
    last_connack = max((t for t, _ in fleet.connect_ms[mark:]), default=t0)
    out: dict[str, Any] = {
        "devices": len(devices), "seconds": round(took, 2),
        "connects_per_s": round(len(devices) / took, 1) if took else 0.0,
        "connacks_per_s": round(len(connected) / (last_connack - t0), 1) if last_connack > t0 else 0.0,
        "connect_ms": pcts(connected),
        "not_ready": sum(1 for d in devices if not d.ready),
        "stopped": sum(1 for d in devices if d.stopped is not None),
    }
    # Everything made so far lives until the end: keep the cyclic GC from rescanning it (with 10,000
    # devices a full collection otherwise stalls every device for a good fraction of a second).
    gc.collect()
    gc.freeze()
    # Idle cost of a connected device: the simulator's own CPU over a few quiet seconds.
    idle_s = ctx.opts.idle_measure
    c0, w0 = time.process_time(), time.monotonic()
    await asyncio.sleep(idle_s)
    cpu = time.process_time() - c0
    out["idle_sim_cpu_pct"] = round(100 * cpu / (time.monotonic() - w0), 1)
    out["idle_sim_cpu_us_per_device_s"] = round(1e6 * cpu / (time.monotonic() - w0) / max(1, len(devices)), 2)
    out["phase_s"] = round(time.monotonic() - t0, 2)
    return out


def pcts(xs: Sequence[float]) -> dict[str, float]:
    if not xs:
        return {"n": 0}
    s = sorted(xs)

    def at(p: float) -> float:
        return round(s[min(len(s) - 1, int(p / 100 * len(s)))], 2)

    return {"n": len(s), "p50": at(50), "p95": at(95), "p99": at(99), "max": round(s[-1], 2),
            "mean": round(statistics.fmean(s), 2)}


# -- behaviours ------------------------------------------------------------------------------------


def body(rng: random.Random) -> str:
    return rng.choice(WORDS)


async def poisson(rate: float, until: float, rng: random.Random, act: Callable[[], None]) -> int:
    """Call ``act`` at Poisson arrivals of ``rate`` per second until ``until`` (monotonic); catches
    up on late wake-ups so the offered rate holds even when the loop is busy."""
    if rate <= 0:
        await asyncio.sleep(max(0.0, until - time.monotonic()))
        return 0
    n = 0
    t = time.monotonic()
    while True:
        t += rng.expovariate(rate)
        if t >= until:
            break
        delay = t - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        act()
        n += 1
    await asyncio.sleep(max(0.0, until - time.monotonic()))
    return n


async def traffic(ctx: Ctx, senders: Sequence[SimDevice], readers: Sequence[SimDevice], seconds: float,
                  *, channels_of: Callable[[SimDevice], Sequence[str]] | None = None) -> dict[str, Any]:
    """Sends (Poisson with bursts), reads and typing for ``seconds``."""
    o, rng, fleet = ctx.opts, ctx.rng, ctx.fleet
    until = time.monotonic() + seconds
    pick = channels_of or (lambda d: list(d.channels))
    sent = 0

    def one_send() -> None:
        nonlocal sent
        live = [d for d in rng.sample(list(senders), min(len(senders), 8)) if d.want_online and d.stopped is None]
        if not live:
            return
        d = live[0]
        chans = pick(d)
        if not chans:
            return
        channel = rng.choice(chans)
        if o.rich > 0 and rng.random() < o.rich and rich_send(d, channel, rng):
            sent += 1
            return
        for _ in range(o.burst_size if rng.random() < o.burst_prob else 1):
            d.send(channel, body(rng))
            sent += 1

    def one_read() -> None:
        d = rng.choice(readers)
        if d.ready and d.channels:
            fleet.call_later_api(_quiet(d.mark_read(rng.choice(list(d.channels)))), "read")

    def one_typing() -> None:
        d = rng.choice(senders)
        chans = pick(d)
        if chans:
            d.typing(rng.choice(chans))

    t0 = time.monotonic()
    await asyncio.gather(poisson(o.rate, until, rng, one_send),
                         poisson(o.read_rate if readers else 0, until, rng, one_read),
                         poisson(o.typing_rate if senders else 0, until, rng, one_typing))
    took = time.monotonic() - t0
    return {"seconds": round(took, 2), "sends": sent, "offered_per_s": round(sent / took, 1) if took else 0.0}


REACTIONS = ("👍", "🎉", "❤️", ":ship_it:")


def rich_send(d: SimDevice, channel: str, rng: random.Random) -> bool:
    """One event on a recent message the device holds (docs/protocol.md, *Rich messages*): an edit
    or delete of its user's own text, a reaction added or removed, or a thread reply. Some are
    refused when another device got there first (a deleted target): an error ack, which is fine.
    False when the device holds nothing to act on."""
    events = d.channels[channel].events
    texts = [m for s, m in sorted(events.items())[-50:] if m.kind == "text"]
    if not texts:
        return False
    own = [m for m in texts if m.sender == d.user.user_id]
    roll = rng.random()
    if own and roll < 0.25:
        d.send_event(channel, kind="edit", target=rng.choice(own).seq, body=body(rng) + " (edited)")
    elif own and roll < 0.35:
        d.send_event(channel, kind="delete", target=rng.choice(own).seq)
    elif roll < 0.85:
        d.send_event(channel, kind="reaction", target=rng.choice(texts).seq, emoji=rng.choice(REACTIONS),
                     op="add" if rng.random() < 0.7 else "remove")
    else:
        root = rng.choice(texts)
        d.send_event(channel, kind="text", body=body(rng), thread=root.thread or root.seq)
    return True


async def _quiet(aw: Awaitable[Any]) -> None:
    with contextlib.suppress(ApiError):
        await aw


def choose_senders(ctx: Ctx, devices: Sequence[SimDevice], groups_ids: list[str]) -> tuple[
        list[SimDevice], Callable[[SimDevice], Sequence[str]] | None]:
    o = ctx.opts
    if o.active_channels:
        active = set(groups_ids[:o.active_channels])
        senders = [d for d in devices if active & d.channels.keys()]
        return senders, lambda d: [c for c in d.channels if c in active]
    return ctx.rng.sample(list(devices), min(o.senders, len(devices))), None


# -- the scenarios ---------------------------------------------------------------------------------


async def chat(ctx: Ctx) -> dict[str, Any]:
    o = ctx.opts
    ctx.fleet.keep_events = o.rich > 0
    _, channels, _ = await populate(ctx, devices=o.devices, per_user=o.devices_per_user, name="chat",
                                    groups_of=lambda us: group(us, o.channel_size, o.channels_per_user, ctx.rng),
                                    servers=o.servers)
    devices = list(ctx.fleet.devices.values())
    out: dict[str, Any] = {"channels": len(channels), "connect": await bring_online(ctx, devices)}
    senders, pick = choose_senders(ctx, devices, channels)
    out["senders"] = len(senders)
    ctx.phase("traffic")
    out["traffic"] = await traffic(ctx, senders, devices, o.duration, channels_of=pick)
    return out


async def large_channel(ctx: Ctx) -> dict[str, Any]:
    o = ctx.opts
    await populate(ctx, devices=o.members, per_user=1, name="large", groups_of=lambda us: [list(us)])
    devices = list(ctx.fleet.devices.values())
    out: dict[str, Any] = {"members": len(devices), "connect": await bring_online(ctx, devices)}
    senders = ctx.rng.sample(devices, min(o.senders, len(devices)))
    out["senders"] = len(senders)
    ctx.phase("traffic")
    mark = len(ctx.fleet.obs.sends)
    out["traffic"] = await traffic(ctx, senders, devices, o.duration)
    out["fanout"] = fanout_completion(ctx, mark, len(devices))
    return out


def fanout_completion(ctx: Ctx, mark: int, members: int) -> dict[str, Any]:
    """Per message: from the send until the last member device got it live."""
    obs = ctx.fleet.obs
    last: dict[str, float] = {}
    count: dict[str, int] = {}
    for d in obs.deliveries:
        if d.via == "live" and d.cmid is not None:
            last[d.cmid] = max(last.get(d.cmid, 0.0), d.t)
            count[d.cmid] = count.get(d.cmid, 0) + 1
    done = [(last[s.cmid] - s.t_first) * 1000 for s in obs.sends[mark:] if count.get(s.cmid, 0) >= members]
    return {"messages": len(obs.sends) - mark, "complete_live": len(done), "all_members_ms": pcts(done)}


async def flaky(ctx: Ctx) -> dict[str, Any]:
    o = ctx.opts
    _, channels, _ = await populate(ctx, devices=o.devices, per_user=o.devices_per_user, name="flaky",
                                    groups_of=lambda us: group(us, o.channel_size, o.channels_per_user, ctx.rng))
    fleet = ctx.fleet
    devices = list(fleet.devices.values())
    out: dict[str, Any] = {"channels": len(channels), "connect": await bring_online(ctx, devices)}
    senders, pick = choose_senders(ctx, devices, channels)
    ctx.phase("traffic")
    until = time.monotonic() + o.duration
    drops = 0

    def drop() -> None:
        nonlocal drops
        d = ctx.rng.choice(devices)
        if d.ready:
            drops += 1
            d.lose_network(ctx.rng.uniform(0, o.outage))

    mark = len(fleet.resumed)
    traffic_out, _ = await asyncio.gather(traffic(ctx, senders, devices, o.duration, channels_of=pick),
                                          poisson(o.drop_rate * len(devices) / 60, until, ctx.rng, drop))
    out["traffic"] = traffic_out
    ctx.phase("recover")
    await fleet.wait_ready(devices, 120)
    out["network_losses"] = drops
    out["resumes"] = len(fleet.resumed) - mark
    out["failures"] = dict(fleet.failures)
    return out


async def reconnect_storm(ctx: Ctx) -> dict[str, Any]:
    o = ctx.opts
    _, channels, _ = await populate(ctx, devices=o.devices, per_user=o.devices_per_user, name="storm",
                                    groups_of=lambda us: group(us, o.channel_size, o.channels_per_user, ctx.rng))
    fleet = ctx.fleet
    devices = list(fleet.devices.values())
    out: dict[str, Any] = {"channels": len(channels), "connect": await bring_online(ctx, devices)}
    senders, pick = choose_senders(ctx, devices, channels)
    ctx.phase("warmup")
    background = fleet.spawn(traffic(ctx, senders, devices, o.warmup + o.duration, channels_of=pick), "storm.traffic")
    await asyncio.sleep(o.warmup)
    ctx.phase("storm")
    t_drop = time.monotonic()
    sends_before = len(fleet.obs.sends)
    for d in devices:
        d.lose_network(o.outage)
    t_all_down = time.monotonic()
    recovered = await fleet.wait_ready(devices, max(300.0, o.duration * 4), since=t_drop)
    t_ready = time.monotonic()
    # Recovery also means every send made up to now is acked (no loss, outboxes empty).
    drained = await fleet.drain_outboxes(120)
    t_drained = time.monotonic()
    ctx.phase("after")
    await background
    first_resume: dict[str, float] = {}
    first_connect: dict[str, float] = {}
    for t, name in fleet.resumed:
        if t >= t_drop and name not in first_resume:
            first_resume[name] = t
    for t, name in fleet.connected_log:
        if t >= t_drop and name not in first_connect:
            first_connect[name] = t
    resume_s = [t - t_drop for t in first_resume.values()]
    out["storm"] = {
        "devices": len(devices), "outage_s": o.outage, "drop_s": round(t_all_down - t_drop, 3),
        "all_resumed": recovered and len(first_resume) == len(devices),
        "resumed": len(first_resume),
        "recovery_s": round(max(resume_s), 2) if resume_s and recovered else None,
        "all_connected_s": round(max(first_connect.values()) - t_drop, 2) if first_connect else None,
        "ready_s": round(t_ready - t_drop, 2),
        "outboxes_drained": drained, "drained_s": round(t_drained - t_drop, 2),
        "resume_s": pcts(resume_s),
        "sends_before_storm": sends_before,
        "failures": dict(fleet.failures),
        "stopped": dict(fleet.stops),
    }
    return out


async def presence_churn(ctx: Ctx) -> dict[str, Any]:
    o = ctx.opts
    _, channels, groups = await populate(ctx, devices=o.devices, per_user=1, name="presence",
                                         groups_of=lambda us: group(us, o.channel_size, 1, ctx.rng))
    fleet = ctx.fleet
    devices = list(fleet.devices.values())
    by_user = {d.user.user_id: d for d in devices}
    observers: list[SimDevice] = []
    for members in groups:
        if len(observers) >= o.observers:
            break
        watcher = by_user[members[0].user_id]
        watcher.watch = [m.user_id for m in members[1:]]
        observers.append(watcher)
    churners = [d for d in devices if d not in observers]
    out: dict[str, Any] = {"channels": len(channels), "observers": len(observers),
                           "connect": await bring_online(ctx, devices)}
    ctx.phase("churn")
    until = time.monotonic() + o.duration
    transitions = {"background": 0, "network_loss": 0, "foreground": 0}

    async def churn(d: SimDevice) -> None:
        while True:
            await asyncio.sleep(ctx.rng.expovariate(1 / o.cycle))
            if time.monotonic() >= until:
                return
            if d.want_online:
                if ctx.rng.random() < 0.5:
                    transitions["background"] += 1
                    await d.background()
                else:
                    transitions["network_loss"] += 1
                    d.want_online = False  # the app was killed with the network: it stays away
                    d.lose_network()
            else:
                transitions["foreground"] += 1
                d.foreground()

    senders = ctx.rng.sample(devices, min(o.senders, len(devices)))
    await asyncio.gather(traffic(ctx, senders, devices, o.duration), *(churn(d) for d in churners))
    out["transitions"] = transitions
    out["online_at_end"] = sum(1 for d in devices if d.want_online)
    return out


async def push(ctx: Ctx) -> dict[str, Any]:
    o = ctx.opts
    users, channels, _ = await populate(
        ctx, devices=o.devices, per_user=o.devices_per_user, name="push",
        groups_of=lambda us: group(us, o.channel_size, o.channels_per_user, ctx.rng))
    fleet = ctx.fleet
    devices = list(fleet.devices.values())
    ctx.phase("register")
    for i, d in enumerate(devices):
        await fleet.register_push(d, "fcm" if i % 2 == 0 else "apns")
    fleet.obs.push_devices = {d.name for d in devices}
    out: dict[str, Any] = {"channels": len(channels), "connect": await bring_online(ctx, devices)}
    away = {u.user_id for u in ctx.rng.sample(users, int(len(users) * o.offline_fraction))}
    ctx.phase("background")
    for d in devices:
        if d.user.user_id in away:
            await d.background()
    await asyncio.sleep(2.0)  # presence settles before the first message is judged
    online = [d for d in devices if d.want_online]
    senders = ctx.rng.sample(online, min(o.senders, len(online)))
    ctx.phase("traffic")
    mark = len(fleet.obs.sends)
    out["traffic"] = await traffic(ctx, senders, online, o.duration)
    out["users_in_background"] = len(away)
    out["push_latency_ms"] = push_latency(ctx, mark)
    return out


def push_latency(ctx: Ctx, mark: int) -> dict[str, Any]:
    obs = ctx.fleet.obs
    sent = {s.id: s.t_first for s in obs.sends[mark:] if s.id is not None}
    lat = [(p.t - sent[p.id]) * 1000 for p in obs.pushes if p.id in sent]
    return {"pushes": len(obs.pushes), **pcts(lat)}


SCENARIOS: dict[str, Callable[[Ctx], Awaitable[dict[str, Any]]]] = {
    "chat": chat,
    "large-channel": large_channel,
    "flaky": flaky,
    "reconnect-storm": reconnect_storm,
    "presence-churn": presence_churn,
    "push": push,
}
EMBEDDED_ONLY = frozenset({"presence-churn", "push"})
"""The simulated devices do not publish the presence statuses and heartbeats an external broker
needs (docs/protocol.md, "Presence"), and push decisions read presence: these need
``--transport embedded``."""
