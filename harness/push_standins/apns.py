"""APNs stand-in: HTTP/2 over TLS (self-signed certificate) on a free loopback port.

Checks what Apple checks first: ``POST /3/device/{token}``, an ``apns-topic``, and a provider
token (``authorization: bearer <JWT>``) signed ES256 by the configured key, with its ``kid`` and
the team id as ``iss``. Answers per device token from the script: ``200`` with the ``apns-id``, or
``{"reason": ...}`` with the error status; optionally an empty error body or no answer at all.
Runs its own event loop in a thread, so sync and async tests can use it alike.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import uuid
from pathlib import Path
from typing import Any

import jwt
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import ConnectionTerminated, DataReceived, RequestReceived, StreamEnded, StreamReset

from harness.push_standins.common import Received, Recorder, apns_signing_key, self_signed

KEY_ID = "STANDINKEY"
TEAM_ID = "STANDINTEAM"


class ApnsStandIn:
    """Start with :meth:`start`. ``key_file``/``KEY_ID``/``TEAM_ID`` configure the sender,
    ``ca_file`` makes its TLS trust the stand-in, ``host`` is ``127.0.0.1:{port}``."""

    def __init__(self, workdir: Path) -> None:
        self.recorder = Recorder()
        self.ca_file, self._cert_key = self_signed(workdir)
        self.key_file, self._public_key = apns_signing_key(workdir)
        self.key_id, self.team_id = KEY_ID, TEAM_ID
        self.bad_provider_tokens = 0
        self.connections = 0
        self.open: set[_Connection] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="apns-standin", daemon=True)
        self.port = 0

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ApnsStandIn:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    async def _listen(self) -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.ca_file, self._cert_key)
        context.set_alpn_protocols(["h2"])
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self), "127.0.0.1", 0, ssl=context)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for connection in list(self.open):
                if connection.transport is not None:
                    connection.transport.close()
            for _ in range(100):
                if not self.open:
                    break
                await asyncio.sleep(0.01)
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def check_provider_token(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, self._public_key, algorithms=["ES256"], options={"require": ["iat", "iss"]})
        except jwt.PyJWTError:
            return False
        return header.get("kid") == self.key_id and claims.get("iss") == self.team_id


class _Connection(asyncio.Protocol):
    def __init__(self, standin: ApnsStandIn) -> None:
        self.standin = standin
        self.conn = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        self.unanswered: dict[int, str] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.standin.connections += 1
        self.standin.open.add(self)
        self.conn.initiate_connection()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.standin.open.discard(self)
        for token in self.unanswered.values():
            self.standin.recorder.lost(token)
        self.unanswered.clear()

    def _flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.conn.data_to_send())

    def data_received(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, RequestReceived):
                self.streams[event.stream_id] = ({str(k): str(v) for k, v in event.headers or []}, bytearray())
            elif isinstance(event, DataReceived):
                self.streams[event.stream_id][1].extend(event.data or b"")
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, StreamEnded):
                headers, body = self.streams.pop(event.stream_id)
                asyncio.get_running_loop().create_task(self._answer(event.stream_id, headers, bytes(body)))
            elif isinstance(event, StreamReset):
                self.streams.pop(event.stream_id, None)
            elif isinstance(event, ConnectionTerminated) and self.transport is not None:
                self.transport.close()
        self._flush()

    async def _answer(self, stream_id: int, headers: dict[str, str], body: bytes) -> None:
        apns_id = headers.get("apns-id") or str(uuid.uuid4()).upper()
        path = headers.get(":path", "")
        token = path.removeprefix("/3/device/")
        if headers.get(":method") != "POST" or not path.startswith("/3/device/"):
            self._respond(stream_id, apns_id, 405, "MethodNotAllowed")
            return
        if not self.standin.check_provider_token(headers.get("authorization", "")):
            self.standin.bad_provider_tokens += 1
            self._respond(stream_id, apns_id, 403, "InvalidProviderToken")
            return
        if not headers.get("apns-topic"):
            self._respond(stream_id, apns_id, 400, "MissingTopic")
            return
        reply = self.standin.recorder.next_reply(token)
        payload: dict[str, Any] = json.loads(body or b"{}")
        self.standin.recorder.record(Received(token, headers, payload, reply.status))
        self.unanswered[stream_id] = token
        if reply.hang:
            return
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        self.unanswered.pop(stream_id, None)
        if reply.status == 200:
            self._respond(stream_id, apns_id, 200, None)
        elif reply.empty_body:
            self._respond(stream_id, apns_id, reply.status, None)
        else:
            self._respond(stream_id, apns_id, reply.status, reply.code or "InternalServerError")

    def _respond(self, stream_id: int, apns_id: str, status: int, reason: str | None) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        out = [(":status", str(status)), ("apns-id", apns_id)]
        if reason is None:
            self.conn.send_headers(stream_id, out, end_stream=True)
        else:
            data = json.dumps({"reason": reason}).encode()
            self.conn.send_headers(stream_id, [*out, ("content-type", "application/json")])
            self.conn.send_data(stream_id, data, end_stream=True)
        self._flush()
