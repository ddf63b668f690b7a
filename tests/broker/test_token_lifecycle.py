"""Issue #17 on our broker (with authentication): connections live within their token, revocations
close them, and the bounds on retained messages, sessions and connections per user.

Each test fails on the broker before the fix: expired tokens kept their connection, RETAIN was
honoured on every topic and unbounded, presence payloads were relayed unchecked, persistent
sessions never expired, and a user could open any number of connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from mqchat import auth
from mqchat.config import load_settings
from mqchat.mqtt import codec
from mqchat.storage.redis_client import RedisClient
from mqchat.storage.tokens import TokenStore
from tests.broker.conftest import StartBroker
from tests.broker.launch import SECRET, BrokerProcess
from tests.broker.rawclient import RawClient, assert_closed
from tests.conftest import RedisServer

pytestmark = pytest.mark.e2e

NO_LEEWAY = {"MQCHAT_AUTH__LEEWAY_S": "0"}
ONLINE = b'{"status":"online","ts":1}'


def token(broker: BrokerProcess, user: str, device: str = "phone", *, ttl_s: int = 3600,
          service: bool = False, issued_at: float | None = None) -> str:
    keys = auth.load_keys(load_settings(data_dir=broker.data_dir, auth={"secret": SECRET}))
    return auth.issue(keys, user_id=user, device_id=device, now=int(time.time()), ttl_s=ttl_s,
                      role="service" if service else "device",
                      issued_at=time.time() if issued_at is None else issued_at)


def connect(broker: BrokerProcess, user: str, device: str = "phone", *, ttl_s: int = 3600, clean: bool = True,
            expect_rc: int = 0, service: bool = False) -> RawClient:
    return RawClient(broker.port, f"{user}:{device}", username=user, clean=clean, expect_rc=expect_rc,
                     password=token(broker, user, device, ttl_s=ttl_s, service=service))


# --- expiry and in-band refresh ------------------------------------------------------------------


def test_a_connection_is_closed_when_its_token_expires(start_broker: StartBroker) -> None:
    broker = start_broker("mqchat", auth=True, env=NO_LEEWAY)
    with connect(broker, "ualice", ttl_s=2) as alice, connect(broker, "ubob", ttl_s=3600) as bob:
        took = assert_closed(alice.sock, 6, what="an expired token's connection")
        assert took < 4
        bob.ping()  # a valid token's connection stays


def test_an_in_band_refresh_keeps_the_connection_past_the_old_expiry(start_broker: StartBroker) -> None:
    broker = start_broker("mqchat", auth=True, env=NO_LEEWAY)
    with connect(broker, "ualice", ttl_s=2) as alice, connect(broker, "ueve", ttl_s=2) as eve, \
            connect(broker, "svc-bridge", "b0", service=True) as watcher:
        assert watcher.subscribe([("auth/#", 1)]) == [1]
        alice.publish("auth/ualice/phone", token(broker, "ualice", ttl_s=3600).encode(), qos=1)  # PUBACK read
        # eve tries to extend with another user's token, and on another device's topic: both ignored
        eve.publish("auth/ueve/phone", token(broker, "ualice", ttl_s=3600).encode(), qos=1)
        eve.publish("auth/ualice/phone", token(broker, "ueve", ttl_s=3600).encode(), qos=1)
        assert_closed(eve.sock, 6, what="a connection refreshed with someone else's token")
        alice.ping()
        time.sleep(1.0)  # deliberately: past the first token's expiry (2 s after it was issued)
        alice.ping(timeout=2)
        watcher.expect_nothing(0.3)  # the token went to the broker only, never to a subscriber


# --- revocation ----------------------------------------------------------------------------------


def test_a_revoked_device_is_disconnected_and_cannot_reconnect(start_broker: StartBroker,
                                                               redis_server: RedisServer) -> None:
    broker = start_broker("mqchat", auth=True, env={"MQCHAT_REDIS__URL": redis_server.url})
    with connect(broker, "ualice", "phone") as phone, connect(broker, "ualice", "laptop") as laptop, \
            connect(broker, "ubob") as bob:
        start = time.monotonic()
        asyncio.run(_logout(redis_server.url, "ualice", "phone"))
        assert_closed(phone.sock, 3, what="the logged-out device")
        assert time.monotonic() - start < 3
        laptop.ping()
        bob.ping()
        stale = RawClient(broker.port, "ualice:phone", username="ualice",
                          password=token(broker, "ualice", issued_at=time.time() - 60), expect_rc=0x05)
        stale.close()
        connect(broker, "ualice", "phone").close()  # a token issued after the logout is fine
        asyncio.run(_logout(redis_server.url, "ualice", None))
        assert_closed(laptop.sock, 3, what="logout-all")
        bob.ping()


async def _logout(url: str, user: str, device: str | None) -> None:
    redis = RedisClient.from_url(url)
    try:
        await TokenStore(redis, refresh_ttl_s=3600, access_ttl_s=3600).logout(user, device)
    finally:
        await redis.close()


# --- retained messages and presence --------------------------------------------------------------


def test_retain_is_honoured_only_on_presence_topics(start_broker: StartBroker) -> None:
    broker = start_broker("mqchat", auth=True)
    with connect(broker, "ualice") as alice:
        alice.publish("in/ualice/phone/c1", b'{"cmid":"x","body":"hi"}', qos=1, retain=True)
        alice.publish("presence/ualice/phone", ONLINE, qos=1, retain=True)
    with connect(broker, "svc-bridge", "b0", service=True) as late:
        assert late.subscribe([("in/+/+/+", 1), ("presence/ualice/phone", 1)]) == [1, 1]
        kept = late.collect(0.5)
        assert [(m.topic, m.payload, m.retain) for m in kept] == [("presence/ualice/phone", ONLINE, True)]


def test_an_invalid_presence_payload_is_neither_relayed_nor_kept(start_broker: StartBroker) -> None:
    broker = start_broker("mqchat", auth=True)
    with connect(broker, "svc-bridge", "b0", service=True) as watcher, connect(broker, "ualice") as alice:
        assert watcher.subscribe([("presence/ualice/phone", 1)]) == [1]
        for bad in (b"x" * 1000, b'{"status":"gone","ts":1}', b'{"status":"online"}'):
            alice.publish("presence/ualice/phone", bad, qos=1, retain=True)
        alice.publish("presence/ualice/phone", ONLINE, qos=1)
        assert [m.payload for m in watcher.collect(0.5)] == [ONLINE]
    with connect(broker, "svc-bridge", "b1", service=True) as late:
        assert late.subscribe([("presence/ualice/phone", 1)]) == [1]
        late.expect_nothing(0.3)
    assert "invalid presence payload" in broker.log_tail(20_000)


def test_the_retained_store_is_capped(start_broker: StartBroker) -> None:
    broker = start_broker("mqchat", auth=True, env={"MQCHAT_BROKER__RETAINED_MAX_COUNT": "2"})
    for user in ("ua", "ub", "uc"):
        with connect(broker, user) as device:
            device.publish(f"presence/{user}/phone", ONLINE, qos=1, retain=True)
    with connect(broker, "svc-bridge", "b0", service=True) as late:
        assert late.subscribe([("presence/+/phone", 1)]) == [1]
        assert sorted(m.topic for m in late.collect(0.5)) == ["presence/ua/phone", "presence/ub/phone"]
        # a kept topic can still be replaced
    with connect(broker, "ua") as device:
        device.publish("presence/ua/phone", b'{"status":"away","ts":2}', qos=1, retain=True)
    with connect(broker, "svc-bridge", "b0", service=True) as late:
        assert late.subscribe([("presence/ua/phone", 1)]) == [1]
        assert late.recv_publish().payload == b'{"status":"away","ts":2}'


# --- sessions and connections ----------------------------------------------------------------------


def test_a_persistent_session_expires_with_its_queue(start_broker: StartBroker) -> None:
    broker = start_broker("mqchat", auth=True, env={"MQCHAT_BROKER__SESSION_EXPIRY_S": "1"})
    with connect(broker, "ualice", clean=False) as alice:
        assert alice.subscribe([("user/ualice/events", 1)]) == [1]
    with connect(broker, "ualice", clean=False) as back:  # within the expiry: resumed
        assert back.session_present
    time.sleep(1.5)  # deliberately: the subject is time passing
    with connect(broker, "ualice", clean=False) as late:
        assert not late.session_present, "a session away longer than broker.session_expiry_s was resumed"


def test_connections_per_user_are_capped(start_broker: StartBroker) -> None:
    broker = start_broker("mqchat", auth=True, env={"MQCHAT_BROKER__MAX_CONNECTIONS_PER_USER": "2"})
    with contextlib.ExitStack() as stack:
        stack.enter_context(connect(broker, "ualice", "d1"))
        stack.enter_context(connect(broker, "ualice", "d2"))
        connect(broker, "ualice", "d3", expect_rc=codec.REFUSED_UNAVAILABLE).close()
        stack.enter_context(connect(broker, "ualice", "d2"))  # the same device again replaces its own
        stack.enter_context(connect(broker, "ubob", "d1"))  # other users are not affected
        for i in range(3):  # services are exempt
            stack.enter_context(connect(broker, "svc-bridge", f"b{i}", service=True))
