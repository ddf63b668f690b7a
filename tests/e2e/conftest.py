"""Helpers for end-to-end tests against a running ``mqchat up``."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.client import Api, Session
from tests.conftest import System

PASSWORD = "correct horse battery"


@dataclass
class World:
    """Two users, alice and bob, with two devices each, and a group channel they share."""

    api: Api
    alice: str
    bob: str
    carol: str
    alice_phone: Session
    alice_tablet: Session
    bob_phone: Session
    bob_laptop: Session
    carol_phone: Session
    channel: str


@pytest.fixture
async def api(system: System) -> AsyncIterator[Api]:
    client = Api(system.api)
    yield client
    await client.aclose()


async def make_world(api: Api) -> World:
    alice = await api.create_user("alice", PASSWORD)
    bob = await api.create_user("bob", PASSWORD)
    carol = await api.create_user("carol", PASSWORD)
    ap = await api.login("alice", PASSWORD, "phone")
    at = await api.login("alice", PASSWORD, "tablet")
    bp = await api.login("bob", PASSWORD, "phone")
    bl = await api.login("bob", PASSWORD, "laptop")
    cp = await api.login("carol", PASSWORD, "phone")
    channel = await api.create_channel(ap.token, "group", [bob], name="team")
    return World(api, alice, bob, carol, ap, at, bp, bl, cp, channel)


@pytest.fixture
async def world(api: Api) -> World:
    return await make_world(api)


def stored_rows(data_dir: Path, channel: str) -> list[tuple[int, int, str, str, str]]:
    """``(seq, epoch, sender, cmid, body)`` straight from the message database."""
    with sqlite3.connect(f"file:{data_dir / 'messages.db'}?mode=ro", uri=True) as conn:
        return conn.execute(
            "SELECT seq, epoch, sender, cmid, body FROM messages WHERE channel_id=? ORDER BY seq", (channel,)
        ).fetchall()


def total_rows(data_dir: Path) -> int:
    with sqlite3.connect(f"file:{data_dir / 'messages.db'}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM messages").fetchone()[0])
