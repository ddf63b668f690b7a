"""The real pyfcm / aioapns clients against the local stand-ins: every answer class."""

from __future__ import annotations

import time

import pytest

from harness.push_standins.apns import ApnsStandIn
from harness.push_standins.common import Reply
from harness.push_standins.fcm import FcmStandIn
from mqchat.storage.push_state import PushRegistration, SendJob
from workers.push.apns import ApnsPusher
from workers.push.base import Notification, Outcome, PermanentPushError, TemporaryPushError
from workers.push.fcm import FcmPusher

FCM_TOKEN = "fcm-token-" + "x" * 140
APNS_TOKEN = "ab" * 32


def note(platform: str, token: str, text: str | None = "hello bob", app: str | None = None) -> Notification:
    job = SendJob(key="42:u2:phone", message_id="42", user="u2", device="phone", channel="c7", epoch=1, seq=9,
                  sender="u1", kind="text", body=text, badge=4, ts=0, first_ms=0)
    reg = PushRegistration(platform=platform, token=token, app=app)  # type: ignore[arg-type]
    return Notification(job=job, device=reg, title="New message", text=text)


async def test_fcm_success_goes_through_oauth_and_carries_badge_and_collapse_key(
        fcm_pusher: FcmPusher, fcm_standin: FcmStandIn) -> None:
    result = await fcm_pusher.send(note("fcm", FCM_TOKEN))
    assert result.outcome is Outcome.DELIVERED
    assert result.detail.startswith("projects/mqchat-standin/messages/")
    assert fcm_standin.token_requests == 1
    [got] = fcm_standin.recorder.for_token(FCM_TOKEN)
    message = got.payload["message"]
    assert message["android"]["collapse_key"] == "c7"
    assert message["android"]["notification"]["notification_count"] == 4
    assert message["data"]["badge"] == "4"
    assert message["notification"] == {"title": "New message", "body": "hello bob"}


async def test_fcm_privacy_mode_sends_no_text(fcm_pusher: FcmPusher, fcm_standin: FcmStandIn) -> None:
    await fcm_pusher.send(note("fcm", FCM_TOKEN, text=None))
    [got] = fcm_standin.recorder.for_token(FCM_TOKEN)
    assert "body" not in got.payload["message"]["notification"]
    assert "hello" not in str(got.payload)


@pytest.mark.parametrize(("status", "code"), [(404, "UNREGISTERED"), (403, "SENDER_ID_MISMATCH")])
async def test_fcm_dead_tokens(fcm_pusher: FcmPusher, fcm_standin: FcmStandIn, status: int, code: str) -> None:
    fcm_standin.recorder.script(FCM_TOKEN, Reply(status, code))
    result = await fcm_pusher.send(note("fcm", FCM_TOKEN))
    assert (result.outcome, result.detail) == (Outcome.TOKEN_DEAD, code)


@pytest.mark.parametrize(("reply", "retry_after"), [
    (Reply(429, "QUOTA_EXCEEDED", retry_after="7"), 7.0),
    (Reply(503, "UNAVAILABLE", retry_after="2"), 2.0),
    (Reply(500, "INTERNAL"), None),
    (Reply(502, empty_body=True), None),
])
async def test_fcm_temporary_errors_are_not_retried_inside_pyfcm(
        fcm_pusher: FcmPusher, fcm_standin: FcmStandIn, reply: Reply, retry_after: float | None) -> None:
    fcm_standin.recorder.script(FCM_TOKEN, reply)
    started = time.monotonic()
    with pytest.raises(TemporaryPushError) as info:
        await fcm_pusher.send(note("fcm", FCM_TOKEN))
    assert info.value.retry_after == retry_after
    # pyfcm's own loop would have slept Retry-After and retried; exactly one request reached FCM.
    assert len(fcm_standin.recorder.for_token(FCM_TOKEN)) == 1
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize("reply", [Reply(400, "INVALID_ARGUMENT"), Reply(401, "THIRD_PARTY_AUTH_ERROR")])
async def test_fcm_permanent_errors(fcm_pusher: FcmPusher, fcm_standin: FcmStandIn, reply: Reply) -> None:
    fcm_standin.recorder.script(FCM_TOKEN, reply)
    with pytest.raises(PermanentPushError):
        await fcm_pusher.send(note("fcm", FCM_TOKEN))


async def test_fcm_request_that_never_answers_times_out(fcm_pusher: FcmPusher, fcm_standin: FcmStandIn) -> None:
    fcm_standin.recorder.script(FCM_TOKEN, Reply(hang=True))
    started = time.monotonic()
    with pytest.raises(TemporaryPushError, match="timeout"):
        await fcm_pusher.send(note("fcm", FCM_TOKEN))
    assert time.monotonic() - started < 5


async def test_fcm_connection_refused_is_temporary(fcm_standin: FcmStandIn) -> None:
    from tests.conftest import free_port

    pusher = FcmPusher(fcm_standin.service_account, project_id=None, endpoint=f"http://127.0.0.1:{free_port()}",
                       concurrency=1, timeout_s=1.0)
    with pytest.raises(TemporaryPushError, match="connection"):
        await pusher.send(note("fcm", FCM_TOKEN))
    await pusher.aclose()


async def test_apns_success_checks_provider_token_and_carries_badge_and_collapse_id(
        apns_pusher: ApnsPusher, apns_standin: ApnsStandIn) -> None:
    result = await apns_pusher.send(note("apns", APNS_TOKEN, app="com.example.other"))
    assert result.outcome is Outcome.DELIVERED
    assert apns_standin.bad_provider_tokens == 0
    [got] = apns_standin.recorder.for_token(APNS_TOKEN)
    assert got.headers["apns-collapse-id"] == "c7"
    assert got.headers["apns-topic"] == "com.example.other"
    assert got.headers["apns-push-type"] == "alert"
    assert got.payload["aps"]["badge"] == 4
    assert got.payload["aps"]["alert"] == {"title": "New message", "body": "hello bob"}


async def test_apns_privacy_mode_sends_no_text(apns_pusher: ApnsPusher, apns_standin: ApnsStandIn) -> None:
    await apns_pusher.send(note("apns", APNS_TOKEN, text=None))
    [got] = apns_standin.recorder.for_token(APNS_TOKEN)
    assert got.payload["aps"]["alert"] == {"title": "New message"}


@pytest.mark.parametrize(("status", "reason"), [(410, "Unregistered"), (400, "BadDeviceToken")])
async def test_apns_dead_tokens(apns_pusher: ApnsPusher, apns_standin: ApnsStandIn, status: int, reason: str) -> None:
    apns_standin.recorder.script(APNS_TOKEN, Reply(status, reason))
    result = await apns_pusher.send(note("apns", APNS_TOKEN))
    assert (result.outcome, result.detail) == (Outcome.TOKEN_DEAD, reason)


@pytest.mark.parametrize("reply", [Reply(429, "TooManyRequests"), Reply(503, "ServiceUnavailable"),
                                   Reply(500, "InternalServerError")])
async def test_apns_temporary_errors(apns_pusher: ApnsPusher, apns_standin: ApnsStandIn, reply: Reply) -> None:
    apns_standin.recorder.script(APNS_TOKEN, reply)
    with pytest.raises(TemporaryPushError):
        await apns_pusher.send(note("apns", APNS_TOKEN))
    assert len(apns_standin.recorder.for_token(APNS_TOKEN)) == 1


@pytest.mark.parametrize("reply", [Reply(400, "BadTopic"), Reply(413, "PayloadTooLarge")])
async def test_apns_permanent_errors(apns_pusher: ApnsPusher, apns_standin: ApnsStandIn, reply: Reply) -> None:
    apns_standin.recorder.script(APNS_TOKEN, reply)
    with pytest.raises(PermanentPushError):
        await apns_pusher.send(note("apns", APNS_TOKEN))


@pytest.mark.parametrize("reply", [Reply(500, empty_body=True), Reply(hang=True)])
async def test_apns_answer_without_reason_or_no_answer_times_out(
        apns_pusher: ApnsPusher, apns_standin: ApnsStandIn, reply: Reply) -> None:
    """aioapns alone would wait forever here."""
    apns_standin.recorder.script(APNS_TOKEN, reply)
    started = time.monotonic()
    with pytest.raises(TemporaryPushError, match="timeout"):
        await apns_pusher.send(note("apns", APNS_TOKEN))
    assert time.monotonic() - started < 5
    # The connection still serves the next push.
    assert (await apns_pusher.send(note("apns", "cd" * 32))).outcome is Outcome.DELIVERED


async def test_apns_wrong_signing_key_is_permanent(apns_standin: ApnsStandIn,
                                                  tmp_path_factory: pytest.TempPathFactory) -> None:
    from harness.push_standins.common import apns_signing_key

    other_key, _ = apns_signing_key(tmp_path_factory.mktemp("other"))
    pusher = ApnsPusher(other_key, key_id=apns_standin.key_id, team_id=apns_standin.team_id, topic="com.example.chat",
                        sandbox=False, host=apns_standin.host, ca_file=apns_standin.ca_file, concurrency=2,
                        timeout_s=2)
    with pytest.raises(PermanentPushError, match="InvalidProviderToken"):
        await pusher.send(note("apns", APNS_TOKEN))
    assert apns_standin.bad_provider_tokens == 1
    await pusher.aclose()


async def test_apns_untrusted_certificate_is_refused(apns_standin: ApnsStandIn) -> None:
    pusher = ApnsPusher(apns_standin.key_file, key_id=apns_standin.key_id, team_id=apns_standin.team_id,
                        topic="com.example.chat", sandbox=False, host=apns_standin.host, ca_file=None, concurrency=2,
                        timeout_s=2)
    with pytest.raises(TemporaryPushError, match="connection"):
        await pusher.send(note("apns", APNS_TOKEN))
    assert apns_standin.recorder.received == []
    await pusher.aclose()
