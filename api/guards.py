"""Guards at the HTTP boundary: body size, CORS, and who may call the broker hooks and ``/metrics``.

- **Body size.** Every request body is capped at ``http.max_body_bytes`` before anything reads or
  parses it: a declared ``Content-Length`` over the cap is answered 413 at once, and a chunked body
  is cut off (413) the moment it passes the cap.
- **Broker hooks** (``/hooks/...``) answer only the broker: it must present ``http.hooks_secret``,
  as ``Authorization: Bearer <secret>`` (EMQX sends configured headers) or as the ``secret`` query
  parameter (VerneMQ's webhooks cannot send headers). Without a configured secret the hooks are off
  (404), because an open hook answers anyone "may this token connect?" and "does A share a channel
  with B?".
- **``/metrics``** on the API port needs ``Authorization: Bearer <http.metrics_token>`` when that is
  set, and otherwise answers loopback clients only (Prometheus on the same host, or the operations
  ports of the other processes, which bind to loopback by default).
- **CORS** for browser apps on other origins: ``http.cors_origins`` (empty: same origin only).
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Any

from fastapi import Request
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError, error_body
from mqchat.config import HttpSettings


class BodyLimit:
    """ASGI middleware refusing request bodies over ``limit`` bytes with 413 ``body_too_large``.

    Paths under an ``exempt`` prefix are left alone: their routes cap bodies themselves (the signed
    upload URLs of attachments allow up to ``objects.max_upload_bytes``).
    """

    def __init__(self, app: ASGIApp, limit: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.exempt and str(scope.get("path", "")).startswith(self.exempt)):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._refuse(send, 400, "bad_request", "Content-Length is not a number")
                    return
                if declared > self.limit:
                    await self._refuse(send, 413, "body_too_large", self._message())
                    return
        seen = 0
        started = refused = False

        async def limited_receive() -> Message:
            # Past the cap: answer 413 ourselves and tell the app the client went away, so it stops
            # reading; whatever it answers after that is dropped.
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    refused = True
                    if not started:
                        await self._refuse(send, 413, "body_too_large", self._message())
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)

    def _message(self) -> str:
        return f"the request body is larger than {self.limit} bytes"

    @staticmethod
    async def _refuse(send: Send, status: int, code: str, message: str) -> None:
        response = JSONResponse(error_body(code, message), status_code=status, headers={"Connection": "close"})
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _bearer(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _same(presented: str | None, expected: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())


def hooks_guard(settings: HttpSettings) -> Callable[[Request], None]:
    """A FastAPI dependency: the caller is the broker, holding ``http.hooks_secret``."""

    def guard(request: Request) -> None:
        if settings.hooks_secret is None:
            raise ApiError(404, "hooks_disabled", "broker hooks are off: set http.hooks_secret "
                           "(MQCHAT_HTTP__HOOKS_SECRET) and configure the broker to send it")
        secret = settings.hooks_secret.get_secret_value()
        if not (_same(_bearer(request), secret) or _same(request.query_params.get("secret"), secret)):
            raise ApiError(401, "unauthorized", "broker hooks need the hooks secret")

    return guard


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def metrics_allowed(settings: HttpSettings, request: Request) -> bool:
    """Whether this request may read ``/metrics`` on the API port (see the module docstring)."""
    if settings.metrics_token is not None:
        return _same(_bearer(request), settings.metrics_token.get_secret_value())
    return is_loopback(request.client.host if request.client else None)


def cors_options(settings: HttpSettings) -> dict[str, Any]:
    """Keyword arguments for Starlette's ``CORSMiddleware``: bearer tokens, never cookies."""
    return {
        "allow_origins": list(settings.cors_origins),
        "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        "allow_headers": ["Authorization", "Content-Type", "Idempotency-Key"],
        "expose_headers": ["Retry-After"],
        "allow_credentials": False,
        "max_age": 600,
    }


__all__ = ["BodyLimit", "CORSMiddleware", "cors_options", "hooks_guard", "is_loopback", "metrics_allowed"]
