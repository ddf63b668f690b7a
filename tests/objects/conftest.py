"""Fixtures of the object store tests: one local S3 server for the session, and a store per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import FastAPI

from api import errors, uploads
from api.limits import Limits
from mqchat.config import ObjectsSettings, RateLimitSettings
from mqchat.objects.base import ObjectStore
from mqchat.objects.local import LocalObjectStore
from mqchat.objects.s3 import S3ObjectStore
from mqchat.objects.service import Attachments
from mqchat.objects.signing import UrlSigner, derive_key
from mqchat.objects.uploads import MemoryUploadStore
from tests.objects.s3server import S3Server

SIGNING_SECRET = "a-test-secret-that-is-long-enough-for-signing"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture(params=["local", "s3"])
async def object_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    store: ObjectStore
    if request.param == "local":
        store = LocalObjectStore(tmp_path / "objects", UrlSigner(derive_key(SIGNING_SECRET)))
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        store = S3ObjectStore.from_settings(server.settings(server.new_bucket()))
    yield store
    await store.close()


@pytest.fixture
async def http(object_store: ObjectStore) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the store's presigned URLs: the API's routes for local files, plain HTTP for S3."""
    if isinstance(object_store, LocalObjectStore):
        app = FastAPI()
        errors.install(app)
        app.state.attachments = Attachments(ObjectsSettings(), object_store, MemoryUploadStore())
        # The signed-URL routes charge the per-address upload limit: the API's own limits, in memory here.
        app.state.services = SimpleNamespace(limits=Limits(RateLimitSettings()))
        app.include_router(uploads.router)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            yield client
    else:
        async with httpx.AsyncClient() as client:
            yield client
