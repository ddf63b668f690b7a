"""Refresh tokens and revocations in Redis (docs/security.md, *Token lifecycle*).

::

    login ──────────▶ issue(user, device)      new family; its first refresh token
    refresh(token) ─▶ rotate (refresh_rotate.lua): current? replace it : reused? delete the family
    logout(device) ─▶ delete the device's families + revoke its access tokens issued before now
    logout-all ─────▶ the same for every device of the user

A refresh token is ``{family}.{secret}``: opaque and random; only its SHA-256 is stored. Each use
rotates it (the family's ``current`` hash changes), so a token used twice is a stolen copy or a
replay: the family is deleted and the device's access tokens are revoked.

A revocation is a *revoked-before* time per device (``auth:revoked:{user}``, the device or ``*``)
that every check of an access token compares with the token's ``iat`` (HTTP requests, the broker
at CONNECT and on in-band refresh), plus an entry on the ``auth:revocations`` stream that every
embedded broker reads live to close the connections it holds for that device.

Why Redis and not the directory: a refresh is one atomic script, the revocation markers are read
on every CONNECT and HTTP request, the broker needs a push signal (a stream), and everything here
expires by itself. The cost: losing Redis's data logs every device out (each logs in again).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from redis.asyncio.client import Pipeline

from mqchat.storage.keys import REVOCATIONS_MAXLEN
from mqchat.storage.redis_client import RedisClient

ALL_DEVICES = "*"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def family_of(token: str) -> str | None:
    """The family id a refresh token names, or None when it is not shaped like one."""
    family, sep, secret = token.partition(".")
    if not sep or not family or not secret or len(token) > 200:
        return None
    return family


@dataclass(frozen=True, slots=True)
class Rotation:
    """The outcome of presenting a refresh token."""

    outcome: Literal["ok", "unknown", "reused"]
    user_id: str = ""
    device_id: str = ""
    token: str = ""
    """The replacement (``ok`` only)."""


@dataclass(frozen=True, slots=True)
class Revocation:
    """One entry of the revocation stream."""

    entry_id: str
    user_id: str
    device_id: str
    """A device id, or :data:`ALL_DEVICES`."""
    before: float


def _new_token(family: str) -> str:
    return f"{family}.{secrets.token_urlsafe(32)}"


class TokenStore:
    """Refresh token families and revocation markers (a view over the process's :class:`RedisClient`).

    Args:
        redis: the process's client (never closed here).
        refresh_ttl_s: a family's lifetime after its last use (``auth.refresh_ttl_s``).
        access_ttl_s: the longest access token lifetime (``auth.token_ttl_s`` plus leeway): how long
            a revocation marker must be kept.
    """

    def __init__(self, redis: RedisClient, *, refresh_ttl_s: int, access_ttl_s: int) -> None:
        self._redis = redis
        self._refresh_ttl = refresh_ttl_s
        self._access_ttl = access_ttl_s

    async def issue(self, user_id: str, device_id: str) -> str:
        """A new family for one login of ``device_id``; returns its first refresh token."""
        family = secrets.token_urlsafe(16)
        token = _new_token(family)
        k = self._redis.keys

        # Two steps, index first (the keys are in different cluster slots, so no MULTI): a family
        # whose write failed is only a dangling index entry, never a login that logout-all misses.
        def index(pipe: Pipeline) -> None:
            pipe.hset(k.refresh_families(user_id), family, device_id)
            pipe.expire(k.refresh_families(user_id), self._refresh_ttl)

        def create(pipe: Pipeline) -> None:
            pipe.hset(k.refresh_family(family), mapping={"user": user_id, "device": device_id,
                                                         "current": digest(token)})
            pipe.expire(k.refresh_family(family), self._refresh_ttl)

        await self._redis.pipelined(index, transaction=True)
        await self._redis.pipelined(create, transaction=True)
        return token

    async def rotate(self, token: str) -> Rotation:
        """Exchange ``token`` for its replacement. A token that is not its family's current one
        revokes the family and the device's access tokens (``reused``).

        Raises:
            StorageUnavailable: Redis cannot be reached.
        """
        family = family_of(token)
        if family is None:
            return Rotation("unknown")
        replacement = _new_token(family)
        k = self._redis.keys
        answer = await self._redis.run_script("refresh_rotate.lua", [k.refresh_family(family)],
                                              [digest(token), digest(replacement), self._refresh_ttl])
        outcome = _text(answer[0])
        if outcome == "unknown":
            return Rotation("unknown")
        user_id, device_id = _text(answer[1]), _text(answer[2])
        if outcome == "reused":
            await self._revoke(user_id, device_id, families=[family])
            return Rotation("reused", user_id, device_id)
        await self._redis.call(self._redis.driver.expire(k.refresh_families(user_id), self._refresh_ttl))
        return Rotation("ok", user_id, device_id, replacement)

    async def logout(self, user_id: str, device_id: str | None) -> int:
        """End the logins of ``device_id`` (None: every device of the user): their refresh
        families are deleted and their access tokens issued until now are revoked. Returns the
        number of families ended."""
        k = self._redis.keys
        families: Mapping[bytes, bytes] = await self._redis.call(
            self._redis.driver.hgetall(k.refresh_families(user_id)))
        ended = [f.decode() for f, d in families.items() if device_id is None or d.decode() == device_id]
        await self._revoke(user_id, device_id or ALL_DEVICES, families=ended)
        return len(ended)

    async def _revoke(self, user_id: str, device_id: str, *, families: list[str]) -> None:
        """Delete ``families``, revoke the device's access tokens issued before now, tell the brokers,
        then drop the families from the user's index.

        The keys are in different cluster slots, so this is three steps, not one ``MULTI``, in the
        order that leaves no way back in if it stops half-way (the refresh families go first) and
        can be repeated: a failure raises, and the caller's retry (a logout answered 503 is sent
        again) finds the families in the index still and completes the work.
        """
        k = self._redis.keys
        before = round(time.time(), 3)

        def delete(pipe: Pipeline) -> None:
            for family in families:
                pipe.delete(k.refresh_family(family))

        def revoke(pipe: Pipeline) -> None:
            pipe.hset(k.revoked(user_id), device_id, f"{before:.3f}")
            pipe.expire(k.revoked(user_id), self._access_ttl)
            pipe.xadd(k.revocations, {"user": user_id, "device": device_id, "before": f"{before:.3f}"},
                      maxlen=REVOCATIONS_MAXLEN, approximate=True)

        await self._redis.pipelined(delete)
        await self._redis.pipelined(revoke)
        if families:
            await self._redis.call(self._redis.driver.hdel(k.refresh_families(user_id), *families))

    async def revoked_before(self, user_id: str, device_id: str) -> float:
        """Access tokens of ``device_id`` issued before this time (s) are revoked (0: none)."""
        values = await self._redis.call(
            self._redis.driver.hmget(self._redis.keys.revoked(user_id), [device_id, ALL_DEVICES]))
        return max((float(v) for v in values if v is not None), default=0.0)

    async def revoked_before_many(self, devices: Sequence[tuple[str, str]]) -> list[float]:
        """:meth:`revoked_before` of each ``(user_id, device_id)``, in one pipelined round trip."""
        if not devices:
            return []
        k = self._redis.keys

        def read(pipe: Pipeline) -> None:
            for user_id, device_id in devices:
                pipe.hmget(k.revoked(user_id), [device_id, ALL_DEVICES])

        replies = await self._redis.pipelined(read)
        return [max((float(v) for v in values if v is not None), default=0.0) for values in replies]

    async def is_revoked(self, user_id: str, device_id: str, issued_at: float) -> bool:
        return issued_at < await self.revoked_before(user_id, device_id)

    async def revocations_tail(self) -> str:
        """The id to read revocations after: the stream's last entry now (``0-0`` when empty)."""
        info = await self._redis.call(self._redis.driver.xrevrange(self._redis.keys.revocations, count=1))
        return _text(info[0][0]) if info else "0-0"

    async def read_revocations(self, after: str, *, block_ms: int) -> list[Revocation]:
        """Revocations after entry ``after``, waiting up to ``block_ms`` for one."""
        reply = await self._redis.call(self._redis.driver.xread({self._redis.keys.revocations: after},
                                                                 count=500, block=block_ms))
        out: list[Revocation] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                f = {_text(a): _text(b) for a, b in fields.items()}
                out.append(Revocation(_text(entry_id), f.get("user", ""), f.get("device", ""),
                                      float(f.get("before", "0") or 0)))
        return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
