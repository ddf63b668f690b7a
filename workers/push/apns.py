"""APNs HTTP/2 sender, through aioapns (provider token authentication, ES256).

aioapns keeps a pool of HTTP/2 connections and signs the provider token. What it lacks, added here:

* **a timeout on every request**: aioapns resolves a request only when the error response has a
  JSON body with a ``reason``; a non-200 answer with an empty body (or no answer) leaves the caller
  waiting forever. Each send is wrapped in ``asyncio.timeout``;
* **no retries of its own**: ``max_connection_attempts=1``, so the worker's retry policy (jitter,
  horizon) is the only one;
* **bounded concurrency**: a semaphore of ``apns_concurrency`` requests;
* **another host for tests and staging**: aioapns connects to ``protocol_class.APNS_SERVER:APNS_PORT``
  of its pool; :func:`_endpoint_protocol` makes a protocol class with another host and port, and
  the SSL context can trust an extra CA (``push.apns_ca_file``).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from pathlib import Path
from typing import Any

from aioapns import APNs, NotificationRequest, PushType
from aioapns.common import NotificationResult
from aioapns.connection import APNsTLSClientProtocol
from aioapns.exceptions import ConnectionClosed, MaxAttemptsExceeded
from aioapns.exceptions import ConnectionError as ApnsConnectionError

from mqchat.storage.push_state import redact
from workers.push.base import Notification, Outcome, PermanentPushError, Pusher, PushResult, TemporaryPushError
from workers.push.policy import APNS_MAX_BYTES, fit_payload

logger = logging.getLogger(__name__)

#: APNs reasons meaning the token will never work again: remove it.
TOKEN_DEAD_REASONS = frozenset({
    "Unregistered",             # 410: the app was removed from the device / the token is no longer active
    "ExpiredToken",             # 410: the device token has expired
    "BadDeviceToken",           # 400: not a valid token (or a sandbox token sent to production)
    "DeviceTokenNotForTopic",   # 400: the token belongs to another app (bundle id)
})
#: APNs reasons worth retrying later.
TEMPORARY_REASONS = frozenset({
    "TooManyRequests",              # 429: too many pushes to this device token in a short time
    "TooManyProviderTokenUpdates",  # 429: we re-signed the provider token too often; wait
    "ExpiredProviderToken",         # 403: provider token older than an hour; the next attempt re-signs
    "InternalServerError",          # 500: APNs-side error
    "ServiceUnavailable",           # 503: APNs overloaded
    "Shutdown",                     # 503: the APNs server is shutting down; reconnect
})
#: APNs reasons that no retry can fix (dead-letter): the request or our credentials are wrong.
PERMANENT_REASONS = frozenset({
    "BadCollapseId",            # 400: collapse id over 64 bytes
    "BadExpirationDate",        # 400
    "BadMessageId",             # 400: apns-id is not a UUID
    "BadPriority",              # 400
    "BadTopic",                 # 400: apns-topic invalid
    "DuplicateHeaders",         # 400
    "InvalidPushType",          # 400
    "MissingDeviceToken",       # 400
    "MissingTopic",             # 400: topic needed with this key
    "PayloadEmpty",             # 400
    "TopicDisallowed",          # 400: pushing to this topic is not allowed
    "BadCertificate",           # 403
    "BadCertificateEnvironment",  # 403: sandbox vs production mismatch of the certificate
    "Forbidden",                # 403
    "InvalidProviderToken",     # 403: key id / team id / signature wrong
    "MissingProviderToken",     # 403
    "BadPath",                  # 404
    "MethodNotAllowed",         # 405
    "PayloadTooLarge",          # 413: over 4 KB (we truncate, so this is a bug)
})
#: Statuses that are temporary whatever the reason says.
TEMPORARY_STATUSES = frozenset({429, 500, 502, 503, 504})


def classify(status: int, reason: str | None) -> PushResult:
    """Map one APNs answer to an outcome (pure).

    Raises:
        TemporaryPushError, PermanentPushError: see the tables above.
    """
    if status == 200:
        return PushResult(Outcome.DELIVERED)
    if reason in TOKEN_DEAD_REASONS or (status == 410 and reason is None):
        return PushResult(Outcome.TOKEN_DEAD, reason or "410")
    if reason in TEMPORARY_REASONS or status in TEMPORARY_STATUSES:
        raise TemporaryPushError(reason or f"http {status}")
    raise PermanentPushError(reason or f"http {status}")


def build_payload(n: Notification) -> dict[str, Any]:
    """The APNs JSON payload (pure; the text may be shortened to fit 4 KB)."""
    job = n.job

    def render(text: str | None) -> dict[str, Any]:
        alert: dict[str, str] = {"title": n.title}
        if text is not None:
            alert["body"] = text
        return {"aps": {"alert": alert, "badge": job.badge, "sound": "default", "thread-id": job.channel},
                "channel": job.channel, "epoch": job.epoch, "seq": job.seq, "id": job.message_id}

    return fit_payload(render, n.text, APNS_MAX_BYTES)


def apns_id(n: Notification) -> str:
    """A UUID per attempt, derived from the job, so logs on both sides can be matched."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mqchat:{n.job.key}#{n.job.attempt}")).upper()


def _endpoint_protocol(host: str, port: int) -> type[APNsTLSClientProtocol]:
    return type("ApnsEndpointProtocol", (APNsTLSClientProtocol,), {"APNS_SERVER": host, "APNS_PORT": port})


def parse_host(value: str) -> tuple[str, int]:
    """``host`` or ``host:port`` (port 443 by default)."""
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return value, 443


async def _ignore_errors(_request: NotificationRequest, _result: NotificationResult) -> None:
    """aioapns logs each failure with the request id at ERROR; we classify and log ourselves."""


class ApnsPusher(Pusher):
    """APNs over HTTP/2 through aioapns, token (``.p8``) authentication.

    Args:
        key_file: the ES256 signing key.
        key_id, team_id: the key's id and the developer team.
        topic: default bundle id (a device's registered ``app`` wins).
        sandbox: use the development environment.
        host: ``host[:port]`` override (tests, staging).
        ca_file: extra trusted CA (a stand-in's self-signed certificate).
        concurrency: most requests in flight.
        timeout_s: per request.
    """

    platform = "apns"

    def __init__(self, key_file: Path, *, key_id: str, team_id: str, topic: str | None, sandbox: bool,
                 host: str | None, ca_file: Path | None, concurrency: int, timeout_s: float) -> None:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
        if ca_file is not None:
            context.load_default_certs()
        context.set_alpn_protocols(["h2"])
        self._default_topic = topic or ""
        self._client = APNs(key=key_file.read_text(), key_id=key_id, team_id=team_id,
                            topic=self._default_topic or "-", use_sandbox=sandbox, ssl_context=context,
                            max_connections=max(1, concurrency // 100 + 1), max_connection_attempts=1,
                            err_func=_ignore_errors)
        if host is not None:
            self._client.pool.protocol_class = _endpoint_protocol(*parse_host(host))
        self._limit = asyncio.Semaphore(concurrency)
        self._timeout_s = timeout_s

    async def send(self, notification: Notification) -> PushResult:
        topic = notification.device.app or self._default_topic
        if not topic:
            raise PermanentPushError("no apns topic: the device registered no bundle id and push.apns_topic is unset")
        request = NotificationRequest(
            device_token=notification.device.token, message=build_payload(notification),
            notification_id=apns_id(notification), collapse_key=notification.collapse_key[:64],
            push_type=PushType.ALERT, priority=10, apns_topic=topic)
        async with self._limit:
            try:
                async with asyncio.timeout(self._timeout_s):
                    result = await self._client.send_notification(request)
            except TimeoutError as exc:
                raise TemporaryPushError("timeout") from exc
            except (ApnsConnectionError, ConnectionClosed, MaxAttemptsExceeded, OSError) as exc:
                raise TemporaryPushError(f"connection: {type(exc).__name__}") from exc
        status = int(result.status) if str(result.status).isdigit() else 0
        outcome = classify(status, result.description)
        if outcome.outcome is Outcome.TOKEN_DEAD:
            logger.info("apns token %s is dead (%s)", redact(notification.device.token), outcome.detail)
        return outcome

    async def aclose(self) -> None:
        """Close the HTTP/2 connections and wait (briefly) for their TLS shutdown to finish."""
        pool = self._client.pool
        pool.close()
        for _ in range(100):  # bounded: 1 s
            if not pool.connections:
                break
            await asyncio.sleep(0.01)
