"""Fixtures for the HTTP API tests: the app in-process (ASGI transport) over real SQLite stores and a
real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.app import create_app
from mqchat import auth
from mqchat.config import load_settings
from mqchat.storage.base import ServerDirectory
from mqchat.storage.push_state import PushState
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.redis_state import RedisState
from mqchat.storage.sqlite import SqliteDirectory, SqliteMessageStore
from tests.conftest import RedisServer

PW = "correct horse battery"
HOOKS_SECRET = "hooks-secret-for-the-tests"
#: What an external broker sends with every hook call.
HOOK_AUTH = {"Authorization": f"Bearer {HOOKS_SECRET}"}


class RecordingEvents:
    """The MQTT side of user events, recorded (tests/e2e checks they reach devices over MQTT)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def user_event(self, user_id: str, event: dict[str, Any]) -> None:
        self.sent.append((user_id, event))


@dataclass
class Ctx:
    client: httpx.AsyncClient
    store: SqliteMessageStore
    keys: auth.KeySet
    state: RedisState
    push: PushState
    events: RecordingEvents
    directory: ServerDirectory
    app: FastAPI
    state_url: str
    """The test's Redis (to look at keys directly)."""
    redis: RedisClient


@asynccontextmanager
async def open_ctx(tmp_path: Path, redis_server: RedisServer, directory: ServerDirectory | None = None,
                   ) -> AsyncIterator[Ctx]:
    """The app over ``directory`` (default: SQLite in ``tmp_path``), which it then closes."""
    settings = load_settings(data_dir=tmp_path, http={"hooks_secret": HOOKS_SECRET},
                             mqtt={"host": "127.0.0.1", "port": 1999, "ws_port": 1998,
                                                      "public_host": "chat.example.com"})
    keys = auth.load_keys(settings, create=True)
    if directory is None:
        directory = await SqliteDirectory(settings.directory_db).open()
    store = await SqliteMessageStore(settings.messages_db).open()
    redis = RedisClient.from_url(redis_server.url)
    events = RecordingEvents()
    app = create_app(settings, directory, store, keys, redis, events)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        yield Ctx(client, store, keys, RedisState(redis), PushState(redis), events, directory, app, redis_server.url,
                  redis)
    await redis.close()
    await directory.close()
    await store.close()


@pytest.fixture
async def ctx(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Ctx]:
    async with open_ctx(tmp_path, redis_server) as c:
        yield c


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def sctx(request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[Ctx]:
    """:func:`ctx` on SQLite, then with the directory on a real PostgreSQL server (the production backend)."""
    directory: ServerDirectory | None = None
    if request.param == "postgres":
        from mqchat.storage.postgres import PostgresDirectory, migrate

        dsn: str = request.getfixturevalue("postgres_dsn")
        await migrate(dsn)
        directory = await PostgresDirectory(dsn, max_size=4).open()
    async with open_ctx(tmp_path, redis_server, directory) as c:
        yield c


async def user(client: httpx.AsyncClient, name: str, device: str = "phone") -> tuple[str, str]:
    r = await client.post("/v1/users", json={"username": name, "password": PW})
    assert r.status_code == 201, r.text
    r = await client.post("/v1/login", json={"username": name, "password": PW, "device_id": device})
    assert r.status_code == 200, r.text
    return r.json()["user_id"], r.json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def error(r: httpx.Response) -> tuple[int, str]:
    body: dict[str, Any] = r.json()
    assert set(body) == {"error"}, body
    assert {"code", "message"} <= set(body["error"]) <= {"code", "message", "missing"}, body
    assert ("missing" in body["error"]) <= (body["error"]["code"] == "forbidden"), body
    return r.status_code, body["error"]["code"]


