"""Pure push policy: backoff with full jitter, Retry-After, the give-up horizon, payload limits."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqchat.storage.base import ReadMarker
from mqchat.storage.push_state import PushRegistration, SendJob, redact
from workers.fanout import Decision, decide
from workers.push import apns, fcm
from workers.push.base import Notification, Outcome, PermanentPushError, TemporaryPushError
from workers.push.policy import (
    APNS_MAX_BYTES,
    FCM_MAX_BYTES,
    RetryPolicy,
    backoff_delay,
    encoded_size,
    next_attempt_ms,
    parse_retry_after,
    preview_text,
    truncate_utf8,
)
from workers.push.sender import skip_reason

POLICY = RetryPolicy(base_s=1.0, cap_s=60.0, give_up_after_s=3600.0)
FCM_REG = PushRegistration(platform="fcm", token="f" * 140)
APNS_REG = PushRegistration(platform="apns", token="a" * 64, app="com.example.chat")


def job(**kw: object) -> SendJob:
    base: dict[str, object] = {"key": "1:u2:phone", "message_id": "1", "user": "u2", "device": "phone",
                               "channel": "c1", "epoch": 1, "seq": 5, "sender": "u1", "kind": "text", "body": "hello",
                               "badge": 3, "ts": 0, "first_ms": 1_000_000}
    base.update(kw)
    return SendJob(**base)  # type: ignore[arg-type]


@given(attempt=st.integers(0, 200), r=st.floats(0, 1, exclude_max=True))
def test_backoff_stays_within_the_capped_ceiling(attempt: int, r: float) -> None:
    delay = backoff_delay(attempt, POLICY, lambda: r)
    assert 0 <= delay <= min(POLICY.cap_s, POLICY.base_s * 2 ** min(attempt, 62))


def test_backoff_doubles_its_ceiling_per_attempt_until_the_cap() -> None:
    top = [backoff_delay(a, POLICY, lambda: 0.999999) for a in range(10)]
    assert [round(t) for t in top] == [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]


@given(retry_after=st.floats(0, 10_000), r=st.floats(0, 1, exclude_max=True), attempt=st.integers(0, 30))
def test_backoff_never_undercuts_retry_after(retry_after: float, r: float, attempt: int) -> None:
    assert backoff_delay(attempt, POLICY, lambda: r, retry_after=retry_after) >= retry_after


def test_retry_after_beyond_the_cap_is_still_honoured() -> None:
    assert backoff_delay(0, POLICY, lambda: 0.5, retry_after=120) == 120


@given(first=st.integers(0, 10**12), elapsed_s=st.integers(0, 10_000), attempt=st.integers(0, 50),
       r=st.floats(0, 1, exclude_max=True), retry_after=st.none() | st.floats(0, 100_000))
def test_no_attempt_is_ever_scheduled_past_the_horizon(first: int, elapsed_s: int, attempt: int, r: float,
                                                       retry_after: float | None) -> None:
    now = first + elapsed_s * 1000
    due = next_attempt_ms(first_ms=first, now_ms=now, attempt=attempt, policy=POLICY, rand=lambda: r,
                          retry_after=retry_after)
    if due is not None:
        assert now <= due <= first + POLICY.give_up_after_s * 1000


def test_a_long_retry_after_near_the_horizon_gives_up() -> None:
    assert next_attempt_ms(first_ms=0, now_ms=3_500_000, attempt=0, policy=POLICY, rand=lambda: 0.0,
                           retry_after=200) is None
    assert next_attempt_ms(first_ms=0, now_ms=3_500_000, attempt=0, policy=POLICY, rand=lambda: 0.0,
                           retry_after=50) == 3_550_000


def test_retries_end_within_a_bounded_number_of_attempts() -> None:
    now, attempt = 0, 0
    while (due := next_attempt_ms(first_ms=0, now_ms=now, attempt=attempt, policy=POLICY, rand=lambda: 0.5)) \
            is not None:
        now, attempt = due, attempt + 1
        assert attempt < 200
    assert now <= POLICY.give_up_after_s * 1000


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("7", 7.0), (" 30 ", 30.0), ("soon", None), ("-3", None),
    ("Wed, 21 Oct 2015 07:28:00 GMT", 10.0), ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),
])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = 1445412470.0  # 2015-10-21 07:27:50 UTC
    assert parse_retry_after(value, now_s=now) == expected


@given(text=st.text(), limit=st.integers(0, 300))
def test_truncation_fits_and_keeps_a_prefix(text: str, limit: int) -> None:
    cut = truncate_utf8(text, limit)
    assert len(cut.encode()) <= limit
    assert text.startswith((cut.removesuffix("…"), cut))


def notification(text: str | None, reg: PushRegistration = FCM_REG, **kw: object) -> Notification:
    return Notification(job=job(body=text, **kw), device=reg, title="New message", text=text)


@given(text=st.text(max_size=9000))
def test_fcm_payload_never_exceeds_4kb(text: str) -> None:
    message = fcm.build_message(notification(text))
    assert encoded_size({"message": message}) <= FCM_MAX_BYTES
    body = message["notification"].get("body", "")
    assert text.startswith(body.removesuffix("…"))


@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=9000))
def test_apns_payload_never_exceeds_4kb(text: str) -> None:
    payload = apns.build_payload(notification(text, APNS_REG))
    assert len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()) <= APNS_MAX_BYTES
    assert text.startswith(payload["aps"]["alert"].get("body", "").removesuffix("…"))


def test_short_text_is_sent_whole_with_badge_and_collapse_key() -> None:
    m = fcm.build_message(notification("hi there"))
    assert m["notification"] == {"title": "New message", "body": "hi there"}
    assert m["android"]["collapse_key"] == "c1"
    assert m["android"]["notification"]["notification_count"] == 3
    assert m["data"]["badge"] == "3"
    p = apns.build_payload(notification("hi there", APNS_REG))
    assert p["aps"]["badge"] == 3
    assert p["aps"]["alert"]["body"] == "hi there"


def test_privacy_mode_sends_no_text() -> None:
    assert preview_text("text", "secret", privacy=True, preview=True) is None
    assert preview_text("text", "secret", privacy=False, preview=False) is None
    assert preview_text("image", "ref", privacy=False, preview=True) == "[image]"
    m = fcm.build_message(notification(None))
    assert "body" not in m["notification"]
    assert "secret" not in json.dumps(m)
    assert "body" not in apns.build_payload(notification(None, APNS_REG))["aps"]["alert"]


@pytest.mark.parametrize(("status", "muted", "devices", "expected"), [
    ("online", False, {"p": FCM_REG}, Decision.ONLINE),
    ("away", False, {"p": FCM_REG}, Decision.ONLINE),
    ("offline", True, {"p": FCM_REG}, Decision.MUTED),
    ("offline", False, {}, Decision.NO_DEVICE),
    ("offline", False, {"p": FCM_REG}, Decision.PUSH),
])
def test_fanout_decision(status: str, muted: bool, devices: dict[str, PushRegistration], expected: Decision) -> None:
    assert decide(status, muted, devices) is expected


@pytest.mark.parametrize(("status", "marker", "reg", "expected"), [
    ("offline", None, FCM_REG, None),
    ("offline", ReadMarker(1, 4), FCM_REG, None),
    ("offline", ReadMarker(1, 5), FCM_REG, "read"),
    ("offline", ReadMarker(2, 9), FCM_REG, None),  # another epoch: not read
    ("online", None, FCM_REG, "online"),
    ("away", None, FCM_REG, "online"),
    ("offline", None, None, "unregistered"),
])
def test_recheck_before_sending(status: str, marker: ReadMarker | None, reg: PushRegistration | None,
                                expected: str | None) -> None:
    assert skip_reason(job(), status, marker, reg) == expected


@pytest.mark.parametrize(("status", "body", "outcome"), [
    (200, {"name": "projects/p/messages/1"}, Outcome.DELIVERED),
    (404, {"error": {"status": "NOT_FOUND", "details": [{"errorCode": "UNREGISTERED"}]}}, Outcome.TOKEN_DEAD),
    (403, {"error": {"status": "PERMISSION_DENIED", "details": [{"errorCode": "SENDER_ID_MISMATCH"}]}},
     Outcome.TOKEN_DEAD),
    (404, None, Outcome.TOKEN_DEAD),
])
def test_fcm_classification_outcomes(status: int, body: object, outcome: Outcome) -> None:
    assert fcm.classify(status, body, None).outcome is outcome


@pytest.mark.parametrize(("status", "code", "error"), [
    (429, "QUOTA_EXCEEDED", TemporaryPushError), (503, "UNAVAILABLE", TemporaryPushError),
    (500, "INTERNAL", TemporaryPushError), (502, None, TemporaryPushError),
    (400, "INVALID_ARGUMENT", PermanentPushError), (401, "THIRD_PARTY_AUTH_ERROR", PermanentPushError),
    (418, None, PermanentPushError),
])
def test_fcm_classification_errors(status: int, code: str | None, error: type[Exception]) -> None:
    body = {"error": {"details": [{"errorCode": code}]}} if code else None
    with pytest.raises(error):
        fcm.classify(status, body, 7.0)


def test_fcm_temporary_error_carries_retry_after() -> None:
    with pytest.raises(TemporaryPushError) as info:
        fcm.classify(429, {"error": {"details": [{"errorCode": "QUOTA_EXCEEDED"}]}}, 7.0)
    assert info.value.retry_after == 7.0


@pytest.mark.parametrize(("status", "reason", "expected"), [
    (200, None, Outcome.DELIVERED), (410, "Unregistered", Outcome.TOKEN_DEAD), (410, None, Outcome.TOKEN_DEAD),
    (400, "BadDeviceToken", Outcome.TOKEN_DEAD), (400, "DeviceTokenNotForTopic", Outcome.TOKEN_DEAD),
    (429, "TooManyRequests", TemporaryPushError), (500, "InternalServerError", TemporaryPushError),
    (503, "ServiceUnavailable", TemporaryPushError), (403, "ExpiredProviderToken", TemporaryPushError),
    (400, "BadTopic", PermanentPushError), (403, "InvalidProviderToken", PermanentPushError),
    (413, "PayloadTooLarge", PermanentPushError),
])
def test_apns_classification(status: int, reason: str | None, expected: object) -> None:
    if isinstance(expected, Outcome):
        assert apns.classify(status, reason).outcome is expected
    else:
        with pytest.raises(expected):  # type: ignore[call-overload]
            apns.classify(status, reason)


def test_every_table_entry_is_classified_once() -> None:
    for tables in ((fcm.TOKEN_DEAD_CODES, fcm.TEMPORARY_CODES, fcm.PERMANENT_CODES),
                   (apns.TOKEN_DEAD_REASONS, apns.TEMPORARY_REASONS, apns.PERMANENT_REASONS)):
        seen: set[str] = set()
        for table in tables:
            assert not seen & table
            seen |= table


def test_redact_never_shows_a_whole_token() -> None:
    token = "abcdef0123456789" * 4
    assert token not in redact(token)
    assert redact(token).startswith("abcdef")
    assert redact("short") == "…"
