"""Accounts, tokens and channels for a simulated population, through the HTTP API only.

Two paths, chosen by what the simulator knows:

- **signing key known** (the simulator started the system and chose ``MQCHAT_AUTH__SECRET``, or
  was given ``--jwt-secret``): users are created password-less in bulk with
  ``POST /v1/admin/users`` under a service token, and every device token is minted locally with
  the documented claims (docs/protocol.md: ``sub``, ``dev``, ``role``, ``aud``, ``iss``, ``iat``,
  ``nbf``, ``exp``; HS256) — what an external identity provider does. Thousands of devices in
  seconds.
- **otherwise**: ``POST /v1/users`` and ``POST /v1/login`` per device, as an app does. Each costs
  an Argon2id hash on the server (~0.1 s of CPU: about 9 signups/s on a 2-core machine), so this
  path suits a few hundred devices.

Channels are created with ``POST /v1/channels`` (up to 1,000 members at once) and grown with
``POST /v1/channels/{id}/members`` — or, with servers (``--servers N``), as private channels of a
server: members enter the server through an invite they accept, and each channel is visible to the
holders of its own role (an ``allow view_channel`` overwrite on a channel ``@everyone`` may not see),
so every delivery passes the role and overwrite resolution of docs/permissions.md.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt

from harness.http import ApiError, Http

PASSWORD = "mobile-sim-password"
SERVICE_USER = "svc-mobile-sim"
#: Claims the server requires (docs/configuration.md: ``auth.audience``, ``auth.issuer``).
AUDIENCE = "mqchat"
ISSUER = "mqchat"
TOKEN_TTL_S = 24 * 3600
MAX_MEMBERS_PER_CREATE = 999
"""``POST /v1/channels`` takes at most 1,000 members, the creator excluded."""


@dataclass(frozen=True, slots=True)
class Token:
    value: str
    expires_at: float
    """Seconds since the epoch (wall clock, as ``exp``)."""


@dataclass(slots=True)
class UserSpec:
    username: str
    user_id: str = ""
    devices: list[str] = field(default_factory=list)


def mint(secret: str, user_id: str, device_id: str, *, role: str = "device", ttl_s: int = TOKEN_TTL_S,
         now: float | None = None) -> Token:
    """A token as the server issues it (HS256, the claims of docs/protocol.md)."""
    now_s = int(time.time() if now is None else now)
    claims = {"sub": user_id, "dev": device_id, "role": role, "aud": AUDIENCE, "iss": ISSUER,
              "iat": now_s, "nbf": now_s, "exp": now_s + ttl_s}
    return Token(jwt.encode(claims, secret, algorithm="HS256"), now_s + ttl_s)


async def bounded(items: Sequence[Any], fn: Callable[[Any], Awaitable[Any]], concurrency: int) -> list[Any]:
    """``fn`` over ``items`` with at most ``concurrency`` at once, results in order."""
    sem = asyncio.Semaphore(concurrency)

    async def one(item: Any) -> Any:
        async with sem:
            return await fn(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


class Provisioner:
    """Creates users, channels and device tokens for a run.

    Args:
        http: the API.
        secret: the HS256 signing key, if known (the fast path).
        run_id: makes usernames unique per run, so runs can share a long-lived system.
    """

    def __init__(self, http: Http, secret: str | None, *, run_id: str | None = None,
                 concurrency: int = 8) -> None:
        self.http = http
        self.secret = secret
        self.run_id = run_id or secrets.token_hex(3)
        self.concurrency = concurrency
        self.tokens: dict[tuple[str, str], Token] = {}
        self.stats: dict[str, float] = {"users": 0, "users_s": 0.0, "channels": 0, "channels_s": 0.0,
                                        "tokens": 0, "tokens_s": 0.0, "servers": 0, "roles": 0}

    @property
    def fast(self) -> bool:
        return self.secret is not None

    def username(self, index: int) -> str:
        return f"sim{self.run_id}-{index}"

    async def users(self, count: int) -> list[UserSpec]:
        """Create ``count`` users (bulk when the key is known, else one signup each)."""
        t0 = time.monotonic()
        specs = [UserSpec(self.username(i)) for i in range(count)]
        if self.secret is not None:
            service = mint(self.secret, SERVICE_USER, "sim", role="service").value
            by_name: dict[str, str] = {}

            async def batch(chunk: list[UserSpec]) -> None:
                doc = await self.http.call("POST", "/v1/admin/users", service,
                                           json={"users": [{"username": s.username} for s in chunk]})
                for u in doc["users"]:
                    by_name[u["username"]] = u["user_id"]
                if doc["taken"]:
                    raise ApiError(409, "username_taken", f"{len(doc['taken'])} usernames already taken")

            await bounded([specs[i:i + 1000] for i in range(0, count, 1000)], batch, 2)
            for s in specs:
                s.user_id = by_name[s.username]
        else:
            async def signup(s: UserSpec) -> None:
                doc = await self.http.call("POST", "/v1/users", json={"username": s.username, "password": PASSWORD})
                s.user_id = doc["user_id"]

            await bounded(specs, signup, self.concurrency)
        self.stats["users"] += count
        self.stats["users_s"] += time.monotonic() - t0
        return specs

    async def token(self, user: UserSpec, device_id: str, *, fresh: bool = False) -> Token:
        """The device's token: cached, minted, or from ``POST /v1/login``."""
        key = (user.user_id, device_id)
        if not fresh and key in self.tokens:
            return self.tokens[key]
        if self.secret is not None:
            tok = mint(self.secret, user.user_id, device_id)
        else:
            doc = await self.http.call("POST", "/v1/login",
                                       json={"username": user.username, "password": PASSWORD, "device_id": device_id})
            tok = Token(doc["token"], float(doc["expires_at"]))
        self.tokens[key] = tok
        return tok

    async def tokens_for(self, users: Sequence[UserSpec]) -> None:
        """Get every device's token up front (so connecting measures connecting, not logging in)."""
        t0 = time.monotonic()
        pairs = [(u, d) for u in users for d in u.devices]
        await bounded(pairs, lambda p: self.token(p[0], p[1]), self.concurrency)
        self.stats["tokens"] += len(pairs)
        self.stats["tokens_s"] += time.monotonic() - t0

    async def channel(self, creator: UserSpec, members: Sequence[UserSpec], name: str) -> str:
        """A group channel of ``creator`` and ``members``; returns its id."""
        token = (await self.token(creator, creator.devices[0])).value
        others = [m.user_id for m in members if m.user_id != creator.user_id]
        doc = await self.http.call("POST", "/v1/channels", token,
                                   json={"kind": "group", "name": name, "members": others[:MAX_MEMBERS_PER_CREATE]})
        channel_id = str(doc["channel_id"])
        rest = others[MAX_MEMBERS_PER_CREATE:]
        if rest:
            await bounded(rest, lambda u: self.http.call("POST", f"/v1/channels/{channel_id}/members", token,
                                                         json={"user_id": u}), self.concurrency)
        self.stats["channels"] += 1
        return channel_id

    async def channels(self, groups: Sequence[Sequence[UserSpec]], prefix: str) -> list[str]:
        """One channel per group (its first user creates it), concurrently."""
        t0 = time.monotonic()
        indexed = list(enumerate(groups))
        found = await bounded(indexed, lambda ig: self.channel(ig[1][0], ig[1][1:], f"{prefix}{ig[0]}"),
                              self.concurrency)
        self.stats["channels_s"] += time.monotonic() - t0
        return found

    async def position(self, channel_id: str, token: str) -> tuple[int, int]:
        """``(epoch, last_seq)`` of a channel now (``GET /v1/channels/{id}/messages?limit=1``)."""
        doc = await self.http.call("GET", f"/v1/channels/{channel_id}/messages", token, params={"limit": 1})
        return int(doc["epoch"]), int(doc["last_seq"])

    async def server_channels(self, groups: list[list[UserSpec]], servers: int, prefix: str) -> list[str]:
        """One private server channel per group, the groups spread over ``servers`` servers.

        Each server's owner is the first user of its first group and is added to every group of
        the server (an owner sees every channel), so each group is exactly the set of users who
        may see its channel. ``groups`` is extended in place accordingly.
        """
        t0 = time.monotonic()
        by_server: list[list[int]] = [list(range(i, len(groups), servers)) for i in range(min(servers, len(groups)))]

        async def one_server(index: int, group_ids: list[int]) -> list[tuple[int, str]]:
            owner = groups[group_ids[0]][0]
            for g in group_ids:
                if all(u.user_id != owner.user_id for u in groups[g]):
                    groups[g].append(owner)
            owner_token = (await self.token(owner, owner.devices[0])).value
            server = await self.http.call("POST", "/v1/servers", owner_token, json={"name": f"{prefix}-server{index}"})
            server_id = str(server["server_id"])
            members = {u.user_id: u for g in group_ids for u in groups[g] if u.user_id != owner.user_id}
            if members:
                invite = await self.http.call("POST", f"/v1/servers/{server_id}/invites", owner_token,
                                              json={"max_uses": len(members)})

                async def accept(u: UserSpec) -> None:
                    await self.http.call("POST", f"/v1/invites/{invite['code']}/accept",
                                         (await self.token(u, u.devices[0])).value)

                await bounded(list(members.values()), accept, self.concurrency)
            made: list[tuple[int, str]] = []
            for g in group_ids:
                role = await self.http.call("POST", f"/v1/servers/{server_id}/roles", owner_token,
                                            json={"name": f"{prefix}{g}", "permissions": []})
                channel = await self.http.call("POST", f"/v1/servers/{server_id}/channels", owner_token,
                                               json={"name": f"{prefix}{g}", "private": True})
                channel_id = str(channel["channel_id"])
                await self.http.call("PUT", f"/v1/channels/{channel_id}/permissions/role/{role['role_id']}",
                                     owner_token, json={"allow": ["view_channel"], "deny": []})
                holders = [u for u in groups[g] if u.user_id != owner.user_id]
                grant = f"/v1/servers/{server_id}/members/{{}}/roles/{role['role_id']}"

                async def give(u: UserSpec, path: str = grant) -> None:
                    await self.http.call("PUT", path.format(u.user_id), owner_token)

                await bounded(holders, give, self.concurrency)
                self.stats["roles"] += 1
                self.stats["channels"] += 1
                made.append((g, channel_id))
            self.stats["servers"] += 1
            return made

        done = await bounded(list(enumerate(by_server)), lambda item: one_server(*item), max(1, self.concurrency // 4))
        found = dict(pair for made in done for pair in made)
        self.stats["channels_s"] += time.monotonic() - t0
        return [found[g] for g in range(len(groups))]
