"""Operations endpoints of every process: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

Each process serves them on its own port (``ops.{process}_port``; 0 turns it off) with uvicorn, as
a named task of its composition root. ``/healthz`` answers 200 while the event loop runs;
``/readyz`` answers 200 only while the process can do its job (connected to the broker, holding
its stores) and 503 otherwise, so a load balancer or Kubernetes takes it out of rotation.

The metrics themselves live next to the code that counts (``bridge/metrics.py`` and so on), in
the default registry, with the ``mqchat_`` prefix.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

logger = logging.getLogger(__name__)


def ops_app(ready: Callable[[], bool]) -> Starlette:
    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        ok = ready()
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    return Starlette(routes=[
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
    ])


async def metrics_endpoint(_: Request) -> Response:
    """The default registry in the Prometheus text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:  # mqchat.lifecycle owns the signals
        yield


async def serve_ops(host: str, port: int, ready: Callable[[], bool]) -> None:
    """Serve the operations endpoints until cancelled."""
    config = uvicorn.Config(ops_app(ready), host=host, port=port, log_config=None, access_log=False,
                            lifespan="off")
    server = _Server(config)
    try:
        await server.serve()
    except asyncio.CancelledError:
        server.should_exit = True
        raise
