"""``python -m bench.acl``: the broker's ACL with servers, roles and overwrites against the flat model.

Three measurements, over a real directory (SQLite in a temporary directory by default, or
``--directory postgresql://...``), through :class:`mqchat.access.MembershipCache`,
:func:`mqchat.access.decide_cached` and :func:`mqchat.access.check`, the code the embedded broker's
ACL plugin runs on every SUBSCRIBE, PUBLISH and delivery::

    decisions  ACL decisions per second and CPU µs per delivery with a warm cache, for a member
               of a group channel (flat) and of a server with --roles roles and overwrites; and
               the cost of one cache reload (``channel_ids_of``), paid per user once per
               ``broker.membership_cache_s``
    live       a server of --members members and --roles roles: how long after the directory
               change a join, a role change (a role whose overwrite denies ``view_channel``) and
               a kick take effect in the ACL, with the cache of ``--cache-s`` seconds
    fanout     one channel of --fanout-members members (a server's), --rate messages per second for
               --seconds: ACL CPU per delivery, the old way (every delivery parses its topic, and
               every user's channel set is re-read each ``--cache-s``) and the new way (verdicts
               memoized per session, the cache fed by invalidations, ``fed_ttl_s`` 30 s), and the
               old way with a cache that never expires (``old_warm``: the parsing alone), in the
               same run (a way that cannot keep up delivers fewer messages: ``messages``, and
               ``ms_per_message`` is the time to decide one message for every member); then one
               member revoked by its invalidation event

Each figure is one run; CPU time is ``time.process_time`` of this process (the directory's thread
included).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from mqchat import access, auth, policy, topics
from mqchat.invalidation import Invalidation
from mqchat.permissions import NONE, Permission
from mqchat.storage.base import ServerDirectory
from mqchat.storage.factory import open_directory_from

P = Permission


def now_ms() -> int:
    return time.time_ns() // 1_000_000


async def open_bench_directory(url: str | None, workdir: Path) -> ServerDirectory:
    if url is not None:
        from mqchat.storage.postgres import migrate

        await migrate(url)
    return await open_directory_from("sqlite", workdir / "directory.db", url=url)


async def users(d: ServerDirectory, prefix: str, n: int) -> list[str]:
    return [(await d.create_user(f"{prefix}{i}", "x", now_ms=now_ms())).user_id for i in range(n)]


async def server_with_roles(d: ServerDirectory, owner: str, members: list[str], n_roles: int,
                            n_channels: int = 10) -> tuple[str, list[str], list[str]]:
    """A server, ``n_roles`` roles handed out round-robin, ``n_channels`` channels each with role
    overwrites (one allows, one denies ``send_messages``). Returns the server, its roles, its channels."""
    server = (await d.create_server(owner, "bench", discoverable=True, now_ms=now_ms())).server_id
    roles = [(await d.create_role(owner, server, f"r{i}", P.ADD_REACTIONS, position=i + 1, now_ms=now_ms())).role_id
             for i in range(n_roles)]
    channels = []
    for c in range(n_channels):
        ch = (await d.create_server_channel(owner, server, f"c{c}", now_ms=now_ms())).channel_id
        await d.set_overwrite(owner, ch, "role", roles[c % n_roles], allow=P.MANAGE_MESSAGES, deny=NONE,
                              now_ms=now_ms())
        await d.set_overwrite(owner, ch, "role", roles[(c + 1) % n_roles], allow=NONE, deny=P.SEND_MESSAGES,
                              now_ms=now_ms())
        channels.append(ch)
    for i, user in enumerate(members):
        await d.join_server(user, server, now_ms=now_ms())
        await d.add_member_role(owner, server, user, roles[i % n_roles], now_ms=now_ms())
    return server, roles, channels


async def decisions(d: ServerDirectory, n_roles: int, checks: int) -> dict[str, float]:
    owner, flat_user, guild_user = await users(d, "dec", 3)
    group = (await d.create_channel("group", "flat", owner, [flat_user], now_ms=now_ms()))[0].channel_id
    _, _, channels = await server_with_roles(d, owner, [guild_user], n_roles)
    out: dict[str, float] = {}
    for label, user, channel in (("flat", flat_user, group), ("roles", guild_user, channels[0])):
        cache = access.MembershipCache(d, ttl_s=3600)
        principal = auth.Principal(user, "d1", "device", expires_at=0)
        topic = topics.stream(channel)
        assert (await access.check(principal, policy.Action.RECEIVE, topic, cache)).allowed
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(checks):
            await access.check(principal, policy.Action.RECEIVE, topic, cache)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        out[f"{label}.decisions_per_s"] = checks / wall
        out[f"{label}.cpu_us_per_delivery"] = cpu / checks * 1e6
        reloads = 200
        cpu = time.process_time()
        for _ in range(reloads):
            await d.channel_ids_of(user)
        out[f"{label}.reload_cpu_us"] = (time.process_time() - cpu) / reloads * 1e6
    return out


async def time_until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 30.0) -> float:
    start = time.perf_counter()
    while not await predicate():
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError("the change did not take effect")
        await asyncio.sleep(0.005)
    return time.perf_counter() - start


async def live(d: ServerDirectory, n_members: int, n_roles: int, cache_s: float) -> dict[str, float]:
    t0 = time.perf_counter()
    owner, *members = await users(d, "live", n_members + 1)
    newcomer = (await users(d, "new", 1))[0]
    server, roles, channels = await server_with_roles(d, owner, members[:-1], n_roles)
    out = {"setup_s": time.perf_counter() - t0}
    muted = roles[-1]
    await d.set_overwrite(owner, channels[0], "role", muted, allow=NONE, deny=P.VIEW_CHANNEL, now_ms=now_ms())
    target, kicked = members[0], members[1]
    ch = channels[0]

    async def join() -> object:
        return await d.join_server(newcomer, server, now_ms=now_ms())

    async def role_change() -> object:
        return await d.add_member_role(owner, server, target, muted, now_ms=now_ms())

    async def kick() -> object:
        await d.kick(owner, server, kicked, now_ms=now_ms())
        return None

    events: list[tuple[str, Callable[[], Awaitable[object]], str, bool]] = [
        ("join", join, newcomer, True), ("role_change", role_change, target, False), ("kick", kick, kicked, False)]
    for name, change, user, visible_after in events:
        cache = access.MembershipCache(d, ttl_s=cache_s)
        await cache.channels(user)  # warm, just before the change: the stale answer a broker holds
        start = time.perf_counter()
        await change()
        out[f"{name}.write_s"] = time.perf_counter() - start

        async def flipped(u: str = user, visible: bool = visible_after,
                          c: access.MembershipCache = cache) -> bool:
            return (ch in await c.channels(u)) == visible

        out[f"{name}.effect_s"] = out[f"{name}.write_s"] + await time_until(flipped)
    cpu = time.process_time()
    for _ in range(100):
        await d.channel_ids_of(target)
    out["member_reload_cpu_us"] = (time.process_time() - cpu) / 100 * 1e6
    return out


async def fanout(d: ServerDirectory, n_members: int, rate: float, seconds: float, cache_s: float
                 ) -> dict[str, float]:
    t0 = time.perf_counter()
    owner, *members = await users(d, "fan", n_members + 1)
    server = (await d.create_server(owner, "fanout", discoverable=True, now_ms=now_ms())).server_id
    for user in members:
        await d.join_server(user, server, now_ms=now_ms())
    channel = (await d.create_server_channel(owner, server, "big", now_ms=now_ms())).channel_id
    out = {"fanout.setup_s": time.perf_counter() - t0}
    topic = topics.stream(channel)
    principals = [auth.Principal(u, "d1", "device", expires_at=0) for u in members]
    receive = policy.Action.RECEIVE

    old_cache = access.MembershipCache(d, ttl_s=cache_s)
    warm_cache = access.MembershipCache(d, ttl_s=3600)

    async def old_way() -> int:
        return sum([(await access.check(p, receive, topic, old_cache)).allowed for p in principals])

    async def old_way_warm() -> int:  # parsing only: the cache never expires
        return sum([(await access.check(p, receive, topic, warm_cache)).allowed for p in principals])

    new_cache = access.MembershipCache(d, ttl_s=cache_s, fed_ttl_s=30.0)
    new_cache.set_fed(True)  # as follow_invalidations does once it has the stream's tail
    sessions = [access.Verdicts(p) for p in principals]

    async def new_way() -> int:  # what broker.plugins.TopicAclPlugin.topic_allowed does for RECEIVE
        allowed = 0
        for v in sessions:
            known = access.decide_cached(v, receive, topic, new_cache)
            if known is None:
                known = (await access.check(v.principal, receive, topic, new_cache, verdicts=v)).allowed
            allowed += known
        return allowed

    for label, deliver, cache in (("old", old_way, old_cache), ("old_warm", old_way_warm, warm_cache),
                                  ("new", new_way, new_cache)):
        assert await deliver() == n_members  # warm: the first message loads everyone once
        loads, deliveries = cache.loads, 0
        cpu, start = time.process_time(), time.perf_counter()
        tick, busy = 0, 0.0
        while (now := time.perf_counter() - start) < seconds:
            if now < tick / rate:
                await asyncio.sleep(tick / rate - now)
                continue
            deliveries += await deliver()
            busy += time.perf_counter() - start - now
            tick += 1
        cpu, elapsed = time.process_time() - cpu, time.perf_counter() - start
        out[f"fanout.{label}.messages"] = tick
        out[f"fanout.{label}.ms_per_message"] = busy / tick * 1e3
        out[f"fanout.{label}.cpu_us_per_delivery"] = cpu / deliveries * 1e6
        out[f"fanout.{label}.directory_reads_per_s"] = (cache.loads - loads) / elapsed
        out[f"fanout.{label}.cpu_share"] = cpu / elapsed
    out["fanout.speedup"] = out["fanout.old.cpu_us_per_delivery"] / out["fanout.new.cpu_us_per_delivery"]

    # A revocation through its event: the kicked member's next delivery is refused.
    events: list[Invalidation] = []

    async def record(changes: Sequence[Invalidation]) -> None:
        events.extend(changes)

    d.add_listener(record)
    kicked = sessions[0]
    await d.kick(owner, server, kicked.principal.user_id, now_ms=now_ms())
    start = time.perf_counter()
    for event in events:
        new_cache.invalidate(event)
    assert access.decide_cached(kicked, receive, topic, new_cache) is None  # dropped: reloaded on next use
    assert not (await access.check(kicked.principal, receive, topic, new_cache, verdicts=kicked)).allowed
    out["fanout.revoke_s"] = time.perf_counter() - start
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.acl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="*", help="decisions, live, fanout (default: decisions and live)")
    p.add_argument("--members", type=int, default=10_000)
    p.add_argument("--roles", type=int, default=20)
    p.add_argument("--checks", type=int, default=100_000, help="ACL decisions per model (decisions)")
    p.add_argument("--cache-s", type=float, default=1.0, help="the cache lifetime without the invalidation feed "
                   "(broker.membership_cache_unfed_s; live, and the old way of fanout)")
    p.add_argument("--fanout-members", type=int, default=5_000)
    p.add_argument("--rate", type=float, default=5.0, help="messages per second into the fan-out channel")
    p.add_argument("--seconds", type=float, default=3.0, help="length of each fan-out run")
    p.add_argument("--directory", metavar="URL", help="postgresql://... (default: SQLite in a temporary directory)")
    return p


async def run(args: argparse.Namespace) -> dict[str, float]:
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-acl-") as tmp:
        d = await open_bench_directory(args.directory, Path(tmp))
        try:
            if "decisions" in args.what:
                out |= await decisions(d, args.roles, args.checks)
            if "live" in args.what:
                out |= await live(d, args.members, args.roles, args.cache_s)
            if "fanout" in args.what:
                out |= await fanout(d, args.fanout_members, args.rate, args.seconds, args.cache_s)
        finally:
            await d.close()
    return out


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.what = args.what or ["decisions", "live"]
    if unknown := set(args.what) - {"decisions", "live", "fanout"}:
        parser().error(f"unknown measurement(s): {', '.join(sorted(unknown))}")
    for key, value in asyncio.run(run(args)).items():
        print(f"{key:32} {value:12.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
