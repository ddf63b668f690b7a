"""FCM HTTP v1 stand-in: plain HTTP/1.1 on a free loopback port, OAuth token endpoint included.

``POST /token``: the JWT-bearer grant google-auth makes for a service account; the assertion must
be RS256-signed by the service account's key, for Google's token audience and the FCM scope.
``POST /v1/projects/{project}/messages:send``: needs a bearer token issued above; answers per
device token from the script, with the v1 error shape (``error.status``, ``details[].errorCode``).
"""

from __future__ import annotations

import json
import secrets
import select
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt

from harness.push_standins.common import Received, Recorder, Reply, fcm_service_account

PROJECT = "mqchat-standin"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


class FcmStandIn:
    """Start with :meth:`start`; ``service_account`` is the JSON file to configure the sender with."""

    def __init__(self, workdir: Path, project_id: str = PROJECT) -> None:
        self.project_id = project_id
        self.recorder = Recorder()
        self.tokens_issued: set[str] = set()
        self.token_requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self.stopping = threading.Event()
        self.port = int(self._server.server_address[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.token_uri = f"{self.endpoint}/token"
        self.service_account, self._public_key = fcm_service_account(workdir, self.token_uri, project_id)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fcm-standin", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> FcmStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def check_assertion(self, assertion: str) -> bool:
        try:
            # google-auth always puts Google's token endpoint in ``aud``, whatever ``token_uri`` is.
            claims = jwt.decode(assertion, self._public_key, algorithms=["RS256"], audience=GOOGLE_TOKEN_AUDIENCE)
        except jwt.PyJWTError:
            return False
        return "firebase.messaging" in str(claims.get("scope", ""))

    def issue(self) -> str:
        token = "ya29.standin-" + secrets.token_hex(8)
        with self._lock:
            self.tokens_issued.add(token)
            self.token_requests += 1
        return token


def _peer_gone(sock: Any) -> bool:
    """The client closed its end (it died waiting): a readable socket with nothing to read."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, 0x2) == b""  # MSG_PEEK
    except OSError:
        return True


def _handler(standin: FcmStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _json(self, status: int, doc: dict[str, Any] | None, headers: dict[str, str] | None = None) -> None:
            body = b"" if doc is None else json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            if self.path == "/token":
                form = urllib.parse.parse_qs(raw.decode())
                if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"] or \
                        not standin.check_assertion(form.get("assertion", [""])[0]):
                    self._json(400, {"error": "invalid_grant", "error_description": "bad assertion"})
                    return
                self._json(200, {"access_token": standin.issue(), "expires_in": 3600, "token_type": "Bearer"})
                return
            if self.path != f"/v1/projects/{standin.project_id}/messages:send":
                self._json(404, {"error": {"code": 404, "message": "no such path", "status": "NOT_FOUND"}})
                return
            bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if bearer not in standin.tokens_issued:
                self._json(401, {"error": {"code": 401, "message": "bad credentials", "status": "UNAUTHENTICATED"}})
                return
            doc = json.loads(raw)
            token = doc["message"]["token"]
            reply: Reply = standin.recorder.next_reply(token)
            standin.recorder.record(Received(token, dict(self.headers.items()), doc, reply.status))
            if reply.hang:
                standin.stopping.wait(600)
                return
            if reply.delay_s:
                time.sleep(reply.delay_s)
            if _peer_gone(self.connection):
                standin.recorder.lost(token)
                self.close_connection = True
                return
            headers = {"Retry-After": reply.retry_after} if reply.retry_after else {}
            if reply.status == 200:
                self._json(200, {"name": f"projects/{standin.project_id}/messages/{secrets.token_hex(6)}"})
            elif reply.empty_body:
                self._json(reply.status, None, headers)
            else:
                error: dict[str, Any] = {"code": reply.status, "message": reply.code or "error",
                                         "status": _STATUS_NAMES.get(reply.status, "UNKNOWN")}
                if reply.code:
                    error["details"] = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                                         "errorCode": reply.code}]
                self._json(reply.status, {"error": error}, headers)

    return Handler
