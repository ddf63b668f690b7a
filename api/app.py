"""Composition root of the HTTP API process."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from pathlib import Path

import uvicorn
from argon2 import PasswordHasher
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.staticfiles import StaticFiles

import mqchat
from api import (
    device_routes,
    errors,
    guards,
    hooks,
    message_routes,
    provisioning,
    routes,
    search,
    servers,
    state_routes,
    uploads,
    users,
)
from api.deps import Services
from api.events import EventSink, MqttEventSink, SendPath
from api.limits import Limits
from mqchat import access, auth, lifecycle
from mqchat.config import Settings
from mqchat.errors import ConfigError, MqchatError
from mqchat.ops import metrics_endpoint
from mqchat.storage.base import MessageStore, ServerDirectory
from mqchat.storage.factory import open_directory, open_message_store
from mqchat.storage.invalidations import InvalidationFeed
from mqchat.storage.push_state import PushState
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.redis_ratelimit import RedisRateLimiter
from mqchat.storage.redis_state import RedisState
from mqchat.storage.tokens import TokenStore

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
"""The web chat's static files (plain HTML, CSS and ES modules; docs/sdk.md)."""


def create_app(settings: Settings, directory: ServerDirectory, store: MessageStore, keys: auth.KeySet,
               redis: RedisClient, events: EventSink, sends: SendPath | None = None) -> FastAPI:
    """Build the FastAPI application around already-open stores (tests pass their own); the caller
    owns and closes them, ``redis`` included (it also keeps the rate limits, shared by every instance)."""
    app = FastAPI(
        title="mqchat HTTP API", version=mqchat.__version__,
        description="Accounts, tokens, channels, membership and history. Real-time traffic is MQTT: "
        "see the protocol document.",
    )
    hasher = PasswordHasher()
    open_attachments = uploads.opener(settings, keys, redis)
    app.state.services = Services(settings, keys, directory, store, RedisState(redis), PushState(redis), events,
                                  hasher, hasher.hash("not-a-password"),
                                  Limits(settings.ratelimit, RedisRateLimiter(redis)),
                                  TokenStore(redis, refresh_ttl_s=settings.auth.refresh_ttl_s,
                                             access_ttl_s=settings.auth.token_ttl_s + settings.auth.leeway_s),
                                  sends, open_attachments)
    app.state.hook_membership = hooks.membership_cache(settings, directory)
    errors.install(app)
    app.include_router(routes.router)
    app.include_router(state_routes.router)
    app.include_router(message_routes.router)
    app.include_router(device_routes.router)
    app.include_router(hooks.router, dependencies=[Depends(guards.hooks_guard(settings.http))])
    app.include_router(provisioning.router)
    uploads.install(app, open_attachments)
    app.include_router(servers.router)
    app.include_router(users.router)
    app.include_router(search.router)
    if settings.http.cors_origins:
        app.add_middleware(guards.CORSMiddleware, **guards.cors_options(settings.http))
    app.add_middleware(guards.BodyLimit, limit=settings.http.max_body_bytes, exempt=(uploads.OBJECTS_PREFIX,))

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        try:
            await redis.ping()
        except MqchatError:
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True})

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if not guards.metrics_allowed(settings.http, request):
            body = errors.error_body("forbidden", "metrics need http.metrics_token (or a loopback client)")
            return JSONResponse(body, status_code=403)
        return await metrics_endpoint(request)

    # The web chat (web/ of a source checkout), mounted last so every route above wins.
    if WEB_DIR.is_dir():
        app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")

    return app


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: :func:`mqchat.lifecycle.run` owns the signals."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def open_stores(settings: Settings) -> AsyncIterator[tuple[ServerDirectory, MessageStore]]:
    async with AsyncExitStack() as stack:
        directory = await open_directory(settings)
        stack.push_async_callback(directory.close)
        store = await open_message_store(settings)
        stack.push_async_callback(store.close)
        yield directory, store


async def main(settings: Settings, stop: asyncio.Event) -> None:
    """Serve the API until ``stop`` is set; in-flight requests finish first."""
    keys = auth.load_keys(settings)
    if not settings.redis.url:
        raise ConfigError("the API needs redis.url (MQCHAT_REDIS__URL)")
    client_id, username, password = lifecycle.service_credentials(settings, "svc-api",
                                                                    lifecycle.instance_id("a"))
    async with open_stores(settings) as (directory, store), AsyncExitStack() as stack:
        redis = RedisClient.from_settings(settings.redis)
        stack.push_async_callback(redis.close)
        events = MqttEventSink(settings.mqtt.host, settings.mqtt.port, client_id=client_id, username=username,
                               password=password)
        await events.start()
        stack.push_async_callback(events.stop)
        app = create_app(settings, directory, store, keys, redis, events, sends=events)
        stack.push_async_callback(search.close_index, app)
        # Directory changes made here are announced to every process that caches access decisions,
        # this one included (docs/permissions.md, *Caching and invalidation*).
        feed = InvalidationFeed(redis)
        directory.add_listener(feed.publish)
        config = uvicorn.Config(app, host=settings.http.host, port=settings.http.port, log_config=None,
                                access_log=False, lifespan="off", timeout_graceful_shutdown=5,
                                proxy_headers=bool(settings.http.trusted_proxies),
                                forwarded_allow_ips=list(settings.http.trusted_proxies) or None)
        server = _Server(config)
        async with asyncio.TaskGroup() as tg:
            serving = tg.create_task(server.serve(), name="api.serve")
            stopper = tg.create_task(stop.wait(), name="api.stop")
            follower = tg.create_task(access.follow_invalidations(feed, [app.state.hook_membership]),
                                      name="api.acl.invalidations")
            while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn only has a flag
                await asyncio.sleep(0.02)
            if server.started:
                lifecycle.mark_ready(settings, "api")
            await asyncio.wait([serving, stopper], return_when=asyncio.FIRST_COMPLETED)
            lifecycle.clear_ready(settings, "api")
            server.should_exit = True
            stopper.cancel()
            follower.cancel()
        logger.info("API stopped")
