"""``python -m bench.acl``: the broker's ACL with servers, roles and overwrites against the flat model.

Two measurements, over a real directory (SQLite in a temporary directory by default, or
``--directory postgresql://...``), through :class:`mqchat.access.MembershipCache` and
:func:`mqchat.access.check`, the code the embedded broker's ACL plugin runs on every SUBSCRIBE,
PUBLISH and delivery::

    decisions  ACL decisions per second and CPU µs per delivery with a warm cache, for a member
               of a group channel (flat) and of a server with --roles roles and overwrites; and
               the cost of one cache reload (``channel_ids_of``), paid per user once per
               ``broker.membership_cache_s``
    live       a server of --members members and --roles roles: how long after the directory
               change a join, a role change (a role whose overwrite denies ``view_channel``) and
               a kick take effect in the ACL, with the cache of ``--cache-s`` seconds

Each figure is one run; CPU time is ``time.process_time`` of this process (the directory's thread
included).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from mqchat import access, auth, policy, topics
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.acl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="*", help="decisions, live (default: both)")
    p.add_argument("--members", type=int, default=10_000)
    p.add_argument("--roles", type=int, default=20)
    p.add_argument("--checks", type=int, default=100_000, help="ACL decisions per model (decisions)")
    p.add_argument("--cache-s", type=float, default=1.0, help="broker.membership_cache_s (live)")
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
        finally:
            await d.close()
    return out


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.what = args.what or ["decisions", "live"]
    if unknown := set(args.what) - {"decisions", "live"}:
        parser().error(f"unknown measurement(s): {', '.join(sorted(unknown))}")
    for key, value in asyncio.run(run(args)).items():
        print(f"{key:32} {value:12.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
