"""FCM HTTP v1 sender, through pyfcm.

pyfcm supplies the OAuth 2.0 service-account flow (google-auth), the per-thread ``requests``
session, the endpoint and the message body (``parse_payload``). Two of its defaults do not fit a
worker, so :class:`_BoundedFCM` changes them:

* its ``send_request`` sleeps for ``Retry-After`` inside the call and then recurses, with no bound,
  and its default adapter retries 502/503 on its own: here one call makes exactly one HTTP attempt
  (one more only to refresh an expired access token) and the worker's retry policy decides the rest;
* its ``parse_response`` drops ``Retry-After`` and the FCM error code: here the response is
  classified from the status, the v1 ``errorCode`` and the header (tables below).

pyfcm is synchronous (``requests``), so calls run on a thread pool of ``fcm_concurrency`` threads;
the same number bounds requests in flight. Every request, the token request included, has a timeout.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import google.auth.transport.requests
import requests
from google.oauth2 import service_account
from pyfcm import FCMNotification
from requests.adapters import HTTPAdapter

from mqchat.storage.push_state import redact
from workers.push.base import Notification, Outcome, PermanentPushError, Pusher, PushResult, TemporaryPushError
from workers.push.policy import FCM_MAX_BYTES, fit_payload, parse_retry_after

logger = logging.getLogger(__name__)

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"

#: FCM v1 error codes meaning the token will never work again: remove it.
TOKEN_DEAD_CODES = frozenset({
    "UNREGISTERED",        # 404: the app was uninstalled or the token expired/was rotated
    "SENDER_ID_MISMATCH",  # 403: the token belongs to another Firebase project's sender
})
#: FCM v1 error codes worth retrying later (with ``Retry-After`` when given).
TEMPORARY_CODES = frozenset({
    "QUOTA_EXCEEDED",      # 429: project or per-device message rate exceeded; back off
    "UNAVAILABLE",         # 503: FCM overloaded; back off, honour Retry-After
    "INTERNAL",            # 500: FCM-side error; retry with backoff
})
#: FCM v1 error codes that no retry can fix: dead-letter.
PERMANENT_CODES = frozenset({
    "INVALID_ARGUMENT",        # 400: malformed message (bad field, payload over 4 KB, malformed token)
    "THIRD_PARTY_AUTH_ERROR",  # 401: the APNs certificate / web push key behind FCM was rejected
    "UNSPECIFIED_ERROR",       # no more information from FCM; retrying blind is not useful
})
#: HTTP statuses that are temporary whatever the body says.
TEMPORARY_STATUSES = frozenset({429, 500, 502, 503, 504})


def fcm_error_code(body: Any) -> str | None:
    """The v1 ``errorCode`` from an error response (``error.details[].errorCode``), else ``error.status``."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None
    error = body["error"]
    for detail in error.get("details") or []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    status = error.get("status")
    return str(status) if status else None


def classify(status: int, body: Any, retry_after: float | None) -> PushResult:
    """Map one FCM v1 answer to an outcome (pure).

    Raises:
        TemporaryPushError, PermanentPushError: see the tables above.
    """
    if status == 200:
        name = body.get("name", "") if isinstance(body, dict) else ""
        return PushResult(Outcome.DELIVERED, str(name))
    code = fcm_error_code(body)
    if code in TOKEN_DEAD_CODES or (status == 404 and code is None):
        return PushResult(Outcome.TOKEN_DEAD, code or "404")
    if code in TEMPORARY_CODES or status in TEMPORARY_STATUSES:
        raise TemporaryPushError(code or f"http {status}", retry_after)
    raise PermanentPushError(code or f"http {status}")


def build_message(n: Notification) -> dict[str, Any]:
    """The v1 ``message`` fields for one notification (pure; the text may be shortened to fit)."""
    job = n.job

    def render(text: str | None) -> dict[str, Any]:
        data = {"channel": job.channel, "epoch": str(job.epoch), "seq": str(job.seq), "id": job.message_id,
                "sender": job.sender, "badge": str(job.badge)}
        android: dict[str, Any] = {"collapse_key": n.collapse_key, "priority": "high",
                                   "notification": {"tag": n.collapse_key, "notification_count": job.badge}}
        message: dict[str, Any] = {"token": n.device.token, "data": data, "android": android,
                                   "notification": {"title": n.title}}
        if text is not None:
            message["notification"]["body"] = text
        return {"message": message}

    return fit_payload(render, n.text, FCM_MAX_BYTES)["message"]  # type: ignore[no-any-return]


class _BoundedFCM(FCMNotification):  # type: ignore[misc]
    """pyfcm with one HTTP attempt per call, timeouts everywhere, and a configurable endpoint."""

    def __init__(self, *, credentials: service_account.Credentials, project_id: str | None, endpoint: str,
                 timeout_s: float) -> None:
        # No urllib3 retries: our policy retries, with jitter and a horizon.
        super().__init__(credentials=credentials, project_id=project_id, adapter=HTTPAdapter(max_retries=0))
        self.FCM_END_POINT_BASE = endpoint.rstrip("/") + "/v1/projects"
        self._timeout_s = timeout_s

    def _get_access_token(self) -> str:
        # pyfcm's own version uses google-auth's default 120 s timeout on the token request.
        request = functools.partial(google.auth.transport.requests.Request(), timeout=self._timeout_s)
        try:
            self.credentials.refresh(request)
        except Exception as exc:
            # google-auth marks refresh errors it considers retryable (5xx, timeouts); a refused
            # grant (bad key, revoked account) is not, and no retry fixes it.
            if getattr(exc, "retryable", True) is False:
                raise PermanentPushError(f"oauth token refused: {type(exc).__name__}") from exc
            raise TemporaryPushError(f"oauth token: {type(exc).__name__}") from exc
        return str(self.credentials.token)

    def post_once(self, payload: bytes) -> requests.Response:
        """One send (plus one retry only when the access token had expired)."""
        response: requests.Response = self.requests_session.post(self.fcm_end_point, data=payload,
                                                                  timeout=self._timeout_s)
        if self._is_access_token_expired(response):
            self.thread_local.token_expiry = 0
            response = self.requests_session.post(self.fcm_end_point, data=payload, timeout=self._timeout_s)
        return response


class FcmPusher(Pusher):
    """FCM HTTP v1 through pyfcm.

    Args:
        service_account_file: Google service account JSON (its ``token_uri`` is where OAuth tokens
            come from).
        project_id: FCM project; defaults to the service account's.
        endpoint: API base URL (``https://fcm.googleapis.com``; a stand-in's in tests).
        concurrency: most requests in flight (threads).
        timeout_s: per HTTP request.
    """

    platform = "fcm"

    def __init__(self, service_account_file: Path, *, project_id: str | None, endpoint: str, concurrency: int,
                 timeout_s: float) -> None:
        credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
            str(service_account_file), scopes=[FCM_SCOPE])
        self._client = _BoundedFCM(credentials=credentials, project_id=project_id, endpoint=endpoint,
                                   timeout_s=timeout_s)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="fcm")
        self._timeout_s = timeout_s

    def _send_sync(self, message: dict[str, Any]) -> PushResult:
        payload = self._client.parse_payload(
            fcm_token=message["token"], notification_title=message["notification"].get("title"),
            notification_body=message["notification"].get("body"), data_payload=message["data"],
            android_config=message["android"])
        try:
            response = self._client.post_once(payload)
        except requests.Timeout as exc:
            raise TemporaryPushError("timeout") from exc
        except requests.RequestException as exc:
            raise TemporaryPushError(f"connection: {type(exc).__name__}") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now_s=time.time())
        return classify(response.status_code, body, retry_after)

    async def send(self, notification: Notification) -> PushResult:
        message = build_message(notification)
        loop = asyncio.get_running_loop()
        try:
            # The thread's own requests are bounded by timeout_s each (at most two sends and a
            # token refresh); the outer bound only guards against a stuck thread.
            async with asyncio.timeout(self._timeout_s * 4):
                result = await loop.run_in_executor(self._pool, self._send_sync, message)
        except TimeoutError as exc:
            raise TemporaryPushError("timeout") from exc
        if result.outcome is Outcome.TOKEN_DEAD:
            logger.info("fcm token %s is dead (%s)", redact(notification.device.token), result.detail)
        return result

    async def aclose(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
