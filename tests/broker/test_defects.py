"""Issue #3: each amqtt 0.12.1 defect, reproduced against a real socket, on both engines.

Every test runs on our broker (``mqchat``, must pass) and on plain upstream amqtt 0.12.1
(``amqtt``, marked ``xfail(strict=True, raises=AssertionError)``): the suite proves the defect
exists upstream, and a harness error (a broker that does not start, a socket error) is reported as
a failure rather than passing as the expected one. Tests use raw sockets (tests/broker/rawclient.py)
so every flag on the wire is seen as sent.

Persistent-session tests run with authentication (JWT + topic ACL): amqtt never queues for
anonymous sessions, which is a defect of its own (tested separately), and would hide the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mqchat.mqtt import codec
from tests.broker.conftest import StartBroker
from tests.broker.launch import BrokerProcess, Engine
from tests.broker.rawclient import (
    RawClient,
    assert_closed,
    check_serving,
    open_socket,
    publish,
    send_quietly,
    subscribe,
    wait_closed,
)
from tests.broker.recording import read_records, recording_plugins
from tests.waiting import wait_for_blocking

pytestmark = pytest.mark.e2e


def engines(defect: str) -> pytest.MarkDecorator:
    """Run on ours (must pass) and on plain amqtt, where ``defect`` must make it fail."""
    return pytest.mark.parametrize("engine", [
        "mqchat",
        pytest.param("amqtt", marks=pytest.mark.xfail(strict=True, raises=AssertionError,
                                                      reason=f"amqtt 0.12.1: {defect}")),
    ])


# --- authenticated brokers: users, devices, a service, channels -------------------------------

ALICE, BOB, SVC = "ualice", "ubob", "svc-tests"
OFFLINE = b'{"status":"offline","ts":0}'
OFFLINE_WILL = (f"presence/{ALICE}/phone", OFFLINE, 1, False)


def login(broker: BrokerProcess, user: str, device: str = "phone", *, clean: bool = True,
          will: tuple[str, bytes, int, bool] | None = None) -> RawClient:
    """Connect as ``user`` on ``device`` with a valid token (client id ``user:device``)."""
    token = broker.token(user, device, service=user.startswith("svc-"))
    return RawClient(broker.port, f"{user}:{device}", username=user, password=token, clean=clean, will=will)


def presence(user: str, device: str = "phone") -> str:
    return f"presence/{user}/{device}"


def events(user: str) -> str:
    return f"user/{user}/events"


def make_channel(broker: BrokerProcess, members: list[str]) -> str:
    from mqchat.storage.sqlite import SqliteDirectory

    async def create() -> str:
        directory = await SqliteDirectory(broker.data_dir / "directory.db").open()
        try:
            channel, _ = await directory.create_channel("group", "t", members[0], members[1:],
                                                        now_ms=int(time.time() * 1000))
            return channel.channel_id
        finally:
            await directory.close()

    return asyncio.run(create())


def remove_member(broker: BrokerProcess, channel: str, user: str) -> None:
    from mqchat.storage.sqlite import SqliteDirectory

    async def remove() -> None:
        directory = await SqliteDirectory(broker.data_dir / "directory.db").open()
        try:
            assert await directory.remove_member(channel, user)
        finally:
            await directory.close()

    asyncio.run(remove())


def go_offline(device: RawClient, watcher: RawClient, will_topic: str) -> None:
    """Drop ``device``'s connection and wait until the broker has handled it: ``watcher`` (subscribed
    to ``will_topic``) receives the device's will."""
    device.drop()
    will = watcher.recv_publish(timeout=5, ack=True)
    assert will.topic == will_topic, f"expected the will on {will_topic}, got {will}"


def publish_seen(publisher: RawClient, topic: str, payload: bytes) -> None:
    """Publish at QoS 1 and wait for the publisher's own copy (it subscribed after the others): by
    then the broker has routed the message to every subscriber, queued it for those offline."""
    publisher.publish(topic, payload, qos=1)
    copy = publisher.recv_publish(timeout=5, ack=True)
    assert (copy.topic, copy.payload) == (topic, payload), f"expected the publisher's own copy, got {copy}"


# --- keep-alive and connect timeout -------------------------------------------------------------


@engines("keep-alive is not enforced: a silent client is never dropped and its will never published")
def test_a_silent_client_is_dropped_within_one_and_a_half_keepalives_and_its_will_published(
        start_broker: StartBroker, engine: Engine) -> None:
    broker = start_broker(engine)
    keepalive = 2
    with RawClient(broker.port, "watcher") as watcher:
        assert watcher.subscribe([("will/silent", 1)]) == [1]
        with RawClient(broker.port, "silent", keepalive=keepalive, will=("will/silent", b"gone", 1, False)) as silent:
            took = assert_closed(silent.sock, keepalive * 1.5 + 2, what=f"a client silent for 1.5 x {keepalive}s")
        assert took <= keepalive * 1.5 + 0.5, f"dropped after {took:.2f}s, later than 1.5 x keep-alive"
        assert took >= keepalive * 0.9, f"dropped after {took:.2f}s, before its keep-alive ran out"
        will = watcher.recv_publish(timeout=2, ack=True)
        assert (will.topic, will.payload) == ("will/silent", b"gone")


@pytest.mark.parametrize("engine", ["mqchat", "amqtt"])
def test_a_client_that_pings_within_its_keepalive_stays_connected(start_broker: StartBroker, engine: Engine) -> None:
    broker = start_broker(engine)
    with RawClient(broker.port, "pinger", keepalive=1) as pinger:
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            time.sleep(0.6)  # deliberately idle for most of the 1 s keep-alive between pings
            pinger.ping()


@engines("no CONNECT timeout: a socket that never sends CONNECT is kept open forever (slowloris)")
def test_a_socket_that_sends_no_connect_is_closed_after_the_connect_timeout(
        start_broker: StartBroker, engine: Engine) -> None:
    broker = start_broker(engine, env={"MQCHAT_BROKER__CONNECT_TIMEOUT_S": "1"})
    with open_socket(broker.port) as idle:
        took = assert_closed(idle, 1 + 2, what="a socket that sent nothing (connect timeout 1s)")
        assert took >= 0.5, f"closed after {took:.2f}s: before the connect timeout"
    # slowloris: a CONNECT trickled one byte at a time never completes within the timeout
    connect = codec.encode_connect("slow", keepalive=60)
    with open_socket(broker.port) as slow:
        start = time.monotonic()
        closed = False
        for byte in connect * 4:
            send_quietly(slow, bytes([byte]))
            slow.settimeout(0.25)
            try:
                closed = slow.recv(1) == b""
            except TimeoutError:
                continue
            except ConnectionResetError:
                closed = True
            if closed or time.monotonic() - start > 4:
                break
        took = time.monotonic() - start
        assert closed, f"a CONNECT trickled over {took:.1f}s was still open"
        assert took <= 1 + 1.0, f"a trickled CONNECT was closed only after {took:.2f}s (timeout 1s)"
    check_serving(broker.port, "after-timeout")


# --- protocol violations must close the connection, answering nothing ---------------------------

VIOLATIONS: list[tuple[str, bool, bytes, str]] = [
    # (id, CONNECT first, bytes, the amqtt defect)
    ("publish-topic-with-plus", True, publish("a/+/b", b"x"),
     "a '+' in a PUBLISH topic stops message handling but leaves the socket open"),
    ("publish-topic-with-hash", True, publish("a/#", b"x"),
     "a '#' in a PUBLISH topic stops message handling but leaves the socket open"),
    ("publish-topic-invalid-utf8", True, publish(b"a/\xff\xfe", b"x"),
     "invalid UTF-8 in a PUBLISH topic does not close the connection"),
    ("publish-qos-3", True, publish("a/b", b"x", qos=3, packet_id=7),
     "a PUBLISH with QoS 3 does not close the connection"),
    ("publish-qos1-packet-id-0", True, publish("a/b", b"x", qos=1, packet_id=0),
     "a QoS 1 PUBLISH with packet id 0 is acknowledged"),
    ("publish-topic-with-nul", True, publish("a/\u0000/b", b"x"),
     "U+0000 in a PUBLISH topic is accepted"),
    ("subscribe-qos-3", True, subscribe(1, [("a/b", 3)]),
     "a SUBSCRIBE asking QoS 3 is granted (SUBACK 0x03)"),
    ("subscribe-empty-filter", True, subscribe(1, [("", 1)]),
     "an empty topic filter is granted"),
    ("subscribe-filter-with-nul", True, subscribe(1, [("a/\u0000", 1)]),
     "U+0000 in a topic filter is granted"),
    ("pingreq-before-connect", False, codec.PINGREQ_BYTES,
     "a packet before CONNECT leaves the socket open"),
    ("publish-before-connect", False, publish("a/b", b"x"),
     "a packet before CONNECT leaves the socket open"),
    ("garbage-before-connect", False, b"\x47\x45\x54\x20/ HTTP/1.1\r\n\r\n",
     "garbage bytes instead of CONNECT leave the socket open"),
    ("garbage-after-connect", True, b"\x00\x01\x02\x03\xff\xfe\xfd\xfc",
     "garbage bytes after CONNECT leave the socket open"),
    ("remaining-length-5-bytes-after-connect", True, b"\x30\xff\xff\xff\xff\x01",
     "a remaining length of more than 4 bytes leaves the socket open"),
]


@pytest.mark.parametrize(("engine", "index"), [
    p for index, (name, _, _, defect) in enumerate(VIOLATIONS)
    for p in (
        pytest.param("mqchat", index, id=f"mqchat-{name}"),
        pytest.param("amqtt", index, id=f"amqtt-{name}",
                     marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=f"amqtt 0.12.1: {defect}")),
    )
])
def test_a_protocol_violation_closes_the_connection_without_an_answer(
        shared_broker: Callable[[Engine], BrokerProcess], engine: Engine, index: int) -> None:
    broker = shared_broker(engine)
    _, connect_first, data, _ = VIOLATIONS[index]
    sock = RawClient(broker.port, f"violator-{index}").sock if connect_first else open_socket(broker.port)
    with sock:
        send_quietly(sock, data)
        assert_closed(sock, 2, what=f"after {data[:24]!r}")
    check_serving(broker.port, f"v{index}")


# --- session takeover ---------------------------------------------------------------------------


@engines("session takeover leaves the old connection open (it answers PINGREQ but never gets a message)")
def test_a_second_connect_with_the_same_client_id_closes_the_old_connection(
        start_broker: StartBroker, engine: Engine) -> None:
    broker = start_broker(engine)
    with RawClient(broker.port, "watcher") as watcher, RawClient(broker.port, "sender") as sender:
        assert watcher.subscribe([("will/twin", 1)]) == [1]
        with RawClient(broker.port, "twin", will=("will/twin", b"old gone", 1, False)) as old:
            assert old.subscribe([("to/twin", 1)]) == [1]
            new = RawClient(broker.port, "twin")
            with new:
                assert_closed(old.sock, 3, what="the old connection after a takeover")
                assert new.subscribe([("to/twin", 1)]) == [1]
                sender.publish("to/twin", b"for the new one", qos=1)
                message = new.recv_publish(ack=True)
                assert message.payload == b"for the new one"
                new.ping()
        # a takeover is not a lost connection: the old connection's will is not published
        watcher.expect_nothing(1.0)


# --- retained messages --------------------------------------------------------------------------


@engines("on CONNECT, retained messages matching any client's subscriptions are sent to the new client")
def test_a_new_client_gets_no_retained_message_it_did_not_subscribe_to(
        start_broker: StartBroker, engine: Engine) -> None:
    broker = start_broker(engine)
    with RawClient(broker.port, "holder") as holder:
        assert holder.subscribe([("leak/secret", 1)]) == [1]
        holder.publish("leak/secret", b"retained", qos=1, retain=True)
        assert holder.recv_publish(ack=True).payload == b"retained"
        with RawClient(broker.port, "newcomer") as newcomer:
            newcomer.expect_nothing(1.0)
            newcomer.ping()
    # tests/e2e/test_broker_hardening.py checks the same with authentication: retained presence
    # is not sent to a user who shares no channel.


# --- QoS ----------------------------------------------------------------------------------------


@engines("a message is delivered at the subscription's QoS instead of min(publish QoS, subscription QoS)")
def test_delivery_qos_is_the_minimum_of_publish_and_subscription_qos(start_broker: StartBroker, engine: Engine) -> None:
    broker = start_broker(engine)
    with RawClient(broker.port, "sub1") as sub1, RawClient(broker.port, "sub0") as sub0, \
            RawClient(broker.port, "pub") as pub:
        assert sub1.subscribe([("q/x", 1)]) == [1]
        assert sub0.subscribe([("q/x", 0)]) == [0]
        pub.publish("q/x", b"at qos 0", qos=0)
        got1, got0 = sub1.recv_publish(ack=True), sub0.recv_publish()
        assert (got1.payload, got1.qos) == (b"at qos 0", 0), f"QoS 0 publish to a QoS 1 subscriber: {got1}"
        assert (got0.payload, got0.qos) == (b"at qos 0", 0)
        pub.publish("q/x", b"at qos 1", qos=1)
        got1, got0 = sub1.recv_publish(ack=True), sub0.recv_publish()
        assert (got1.payload, got1.qos) == (b"at qos 1", 1)
        assert (got0.payload, got0.qos) == (b"at qos 1", 0), f"QoS 1 publish to a QoS 0 subscriber: {got0}"


# --- persistent sessions (authenticated) ----------------------------------------------------------


@engines("queued offline messages are delivered with the RETAIN flag set")
def test_queued_offline_messages_arrive_with_retain_0(start_broker: StartBroker, engine: Engine) -> None:
    broker = start_broker(engine, auth=True)
    with contextlib.ExitStack() as stack, login(broker, SVC, "t") as svc:
        assert svc.subscribe([(presence(ALICE), 1)]) == [1]
        alice = stack.enter_context(login(broker, ALICE, clean=False, will=OFFLINE_WILL))
        assert alice.subscribe([(events(ALICE), 1)]) == [1]
        assert svc.subscribe([(events(ALICE), 1)]) == [1]
        go_offline(alice, svc, presence(ALICE))
        publish_seen(svc, events(ALICE), b"while away")
        with login(broker, ALICE, clean=False) as back:
            assert back.session_present, "CONNACK session-present must be 1 when a persistent session resumes"
            message = back.recv_publish(ack=True)
            assert message.payload == b"while away"
            assert not message.retain, f"a queued message arrived with RETAIN=1: {message}"


@engines("unacknowledged QoS 1 messages are not re-sent when a persistent session reconnects")
def test_unacknowledged_messages_are_resent_with_dup_before_new_ones_on_reconnect(
        start_broker: StartBroker, engine: Engine) -> None:
    broker = start_broker(engine, auth=True)
    with contextlib.ExitStack() as stack, login(broker, SVC, "t") as svc:
        assert svc.subscribe([(presence(ALICE), 1)]) == [1]
        alice = stack.enter_context(login(broker, ALICE, clean=False, will=OFFLINE_WILL))
        assert alice.subscribe([(events(ALICE), 1)]) == [1]
        assert svc.subscribe([(events(ALICE), 1)]) == [1]
        publish_seen(svc, events(ALICE), b"first")
        first = alice.recv_publish()  # never acknowledged
        assert (first.payload, first.qos, first.dup) == (b"first", 1, False)
        go_offline(alice, svc, presence(ALICE))
        publish_seen(svc, events(ALICE), b"second")
        with login(broker, ALICE, clean=False) as back:
            assert back.session_present
            again = back.recv_publish(ack=True)
            assert (again.payload, again.dup, again.packet_id) == (b"first", True, first.packet_id), (
                f"expected the unacknowledged message again, DUP=1, same packet id {first.packet_id}; got {again}")
            new = back.recv_publish(ack=True)
            assert (new.payload, new.dup, new.retain) == (b"second", False, False), f"then the queued one; got {new}"
            back.expect_nothing(0.5)


@engines("an in-flight QoS 1 message is dropped after a hard-coded 5 s wait for its PUBACK")
def test_an_unacknowledged_message_is_never_dropped_on_a_timer(start_broker: StartBroker, engine: Engine) -> None:
    broker = start_broker(engine, auth=True)
    with contextlib.ExitStack() as stack, login(broker, SVC, "t") as svc:
        assert svc.subscribe([(presence(ALICE), 1)]) == [1]
        alice = stack.enter_context(login(broker, ALICE, clean=False, will=OFFLINE_WILL))
        assert alice.subscribe([(events(ALICE), 1)]) == [1]
        svc.publish(events(ALICE), b"acked late", qos=1)
        svc.publish(events(ALICE), b"never acked", qos=1)
        late, never = alice.recv_publish(), alice.recv_publish()
        assert (late.payload, never.payload) == (b"acked late", b"never acked")
        assert late.packet_id is not None
        alice.expect_nothing(7.0)  # no duplicate while the connection lives
        alice.puback(late.packet_id)  # 7 s late: still the broker's in-flight message, nothing lost
        alice.expect_nothing(0.3)
        alice.ping()
        go_offline(alice, svc, presence(ALICE))
        with login(broker, ALICE, clean=False) as back:
            again = back.recv_publish(ack=True)
            assert (again.payload, again.dup, again.packet_id) == (b"never acked", True, never.packet_id), (
                f"the message never acknowledged must be re-sent (DUP=1) after 7 s in flight; got {again}")
            back.expect_nothing(0.5)  # and not the one acknowledged late


@engines("offline-queue delivery skips the ACL (a member removed while offline still gets the channel)")
def test_queued_messages_pass_the_acl_at_delivery(start_broker: StartBroker, engine: Engine) -> None:
    broker = start_broker(engine, auth=True)
    channel = make_channel(broker, [ALICE, BOB])
    with contextlib.ExitStack() as stack, login(broker, SVC, "t") as svc:
        assert svc.subscribe([(presence(BOB), 1)]) == [1]
        bob = stack.enter_context(login(broker, BOB, clean=False, will=(presence(BOB), OFFLINE, 1, False)))
        assert bob.subscribe([(f"ch/{channel}", 1), (events(BOB), 1)]) == [1, 1]
        assert svc.subscribe([(f"ch/{channel}", 1), (events(BOB), 1)]) == [1, 1]
        go_offline(bob, svc, presence(BOB))
        publish_seen(svc, f"ch/{channel}", b"channel message")  # bob is still a member: queued
        publish_seen(svc, events(BOB), b"membership removed")
        remove_member(broker, channel, BOB)
        with login(broker, BOB, clean=False) as back:
            got = back.collect(1.5)
            assert [m.topic for m in got] == [events(BOB)], (
                f"a user removed from {channel} while offline must get only his own events; got {got}")


@engines("a refused CONNECT with another user's client id takes over that user's connection (it receives nothing more)")
def test_another_users_client_id_is_refused_and_leaves_the_owners_connection_alone(
        start_broker: StartBroker, engine: Engine) -> None:
    broker = start_broker(engine, auth=True)
    with login(broker, SVC, "t") as svc, login(broker, ALICE, clean=False) as alice:
        assert alice.subscribe([(events(ALICE), 1)]) == [1]
        with open_socket(broker.port) as intruder:
            intruder.sendall(codec.encode_connect(f"{ALICE}:phone", username=BOB,
                                                 password=broker.token(BOB, "phone"), clean_session=True))
            assert_closed(intruder, 3, what="a CONNECT with another user's client id", allowed=b"\x20\x02\x00\x05")
        svc.publish(events(ALICE), b"still yours", qos=1)
        message = alice.recv_publish(ack=True)
        assert message.payload == b"still yours"
        alice.ping()


@engines("a refused CONNECT with another user's client id deletes that user's persistent session")
def test_another_users_client_id_leaves_the_owners_offline_session_alone(
        start_broker: StartBroker, engine: Engine) -> None:
    broker = start_broker(engine, auth=True)
    with contextlib.ExitStack() as stack, login(broker, SVC, "t") as svc:
        assert svc.subscribe([(presence(ALICE), 1)]) == [1]
        alice = stack.enter_context(login(broker, ALICE, clean=False, will=OFFLINE_WILL))
        assert alice.subscribe([(events(ALICE), 1)]) == [1]
        assert svc.subscribe([(events(ALICE), 1)]) == [1]
        go_offline(alice, svc, presence(ALICE))
        publish_seen(svc, events(ALICE), b"queued for alice")
        connacks = []
        for clean in (True, False):
            with open_socket(broker.port) as intruder:
                intruder.sendall(codec.encode_connect(f"{ALICE}:phone", username=BOB,
                                                     password=broker.token(BOB, "phone"), clean_session=clean))
                try:
                    connacks.append(wait_closed(intruder, 3))
                except TimeoutError as exc:
                    raise AssertionError(f"a CONNECT with another user's client id was not closed: {exc}") from None
        assert [c[:2] + c[3:] for c in connacks] == [b"\x20\x02\x05"] * 2, f"expected CONNACK 0x05: {connacks}"
        with login(broker, ALICE, clean=False) as back:
            assert back.session_present, "alice's persistent session was lost to another user's CONNECT"
            assert back.recv_publish(ack=True).payload == b"queued for alice"
        # [MQTT-3.2.2-4] a CONNACK with a non-zero return code has session-present 0
        assert connacks == [b"\x20\x02\x00\x05"] * 2, f"refusals must not claim a session: {connacks}"


@engines("anonymous sessions never queue messages for an offline persistent session")
def test_an_anonymous_persistent_session_queues_while_offline(start_broker: StartBroker, engine: Engine) -> None:
    broker = start_broker(engine)
    with contextlib.ExitStack() as stack, RawClient(broker.port, "watcher") as watcher:
        assert watcher.subscribe([("will/anon", 1)]) == [1]
        anon = stack.enter_context(RawClient(broker.port, "anon-1", clean=False, will=("will/anon", b"gone", 1, False)))
        assert anon.subscribe([("to/anon", 1)]) == [1]
        assert watcher.subscribe([("to/anon", 1)]) == [1]
        go_offline(anon, watcher, "will/anon")
        publish_seen(watcher, "to/anon", b"while away")
        with RawClient(broker.port, "anon-1", clean=False) as back:
            assert back.session_present, "the anonymous persistent session was not kept"
            message = back.recv_publish(ack=True)
            assert (message.payload, message.retain) == (b"while away", False)


# --- limits -------------------------------------------------------------------------------------


@engines("no maximum packet size: the broker buffers a 16 MiB PUBLISH")
def test_a_packet_over_the_maximum_size_closes_the_connection_before_its_body(
        start_broker: StartBroker, engine: Engine) -> None:
    broker = start_broker(engine, env={"MQCHAT_BROKER__MAX_PACKET_BYTES": "4096"})
    with RawClient(broker.port, "sub") as sub:
        assert sub.subscribe([("big/x", 1)]) == [1]
        with RawClient(broker.port, "fits") as fits:
            fits.publish("big/x", b"f" * 3000, qos=1)
            assert len(sub.recv_publish(ack=True).payload) == 3000
        with RawClient(broker.port, "huge") as huge:
            # the fixed header announces 16 MiB; only the start of the body follows
            header = b"\x30" + codec.encode_remaining_length(16 * 1024 * 1024)
            send_quietly(huge.sock, header + b"\x00\x05big/x" + b"h" * 1000)
            assert_closed(huge.sock, 3, what="a PUBLISH announcing 16 MiB (max 4096 bytes)")
        with RawClient(broker.port, "over") as over:
            send_quietly(over.sock, publish("big/x", b"o" * 5000, qos=1, packet_id=1))
            assert_closed(over.sock, 3, what="a 5,000-byte PUBLISH (max 4096 bytes)")
        sub.expect_nothing(0.5)


# --- shared subscriptions -----------------------------------------------------------------------


@engines("$share/... subscriptions are granted but deliver nothing")
def test_a_shared_subscription_delivers_each_message_to_one_member_of_the_group(
        shared_broker: Callable[[Engine], BrokerProcess], engine: Engine) -> None:
    broker = shared_broker(engine)
    with RawClient(broker.port, "sharer-a") as a, RawClient(broker.port, "sharer-b") as b, \
            RawClient(broker.port, "sharer-pub") as pub:
        assert a.subscribe([("$share/group/s/x", 1)]) == [1]
        assert b.subscribe([("$share/group/s/x", 1)]) == [1]
        for i in range(4):
            pub.publish("s/x", b"m%d" % i, qos=1)
        got = a.collect(1.0) + b.collect(0.2)
        assert sorted(m.payload for m in got) == [b"m0", b"m1", b"m2", b"m3"], (
            f"each message exactly once across the group, got {got}")


# --- plugins ------------------------------------------------------------------------------------


@engines("no plugin hook fires when a will is published")
def test_a_published_will_calls_the_plugins_will_hook(start_broker: StartBroker, engine: Engine,
                                                       tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    broker = start_broker(engine, plugins=recording_plugins(records))
    with RawClient(broker.port, "watcher") as watcher:
        assert watcher.subscribe([("will/hooked", 1)]) == [1]
        with RawClient(broker.port, "doomed", will=("will/hooked", b"bye", 1, True)) as doomed:
            go_offline(doomed, watcher, "will/hooked")
    wait_for_blocking(lambda: bool(read_records(records, "will")), 3, what="on_broker_will_published")
    wills = read_records(records, "will")
    assert len(wills) == 1, f"on_broker_will_published calls: {wills}"
    assert {k: wills[0][k] for k in ("client_id", "topic", "data", "qos", "retain")} == {
        "client_id": "doomed", "topic": "will/hooked", "data": "bye", "qos": 1, "retain": True}


@engines("a topic plugin returning None denies, even when every other plugin allows")
def test_a_topic_plugin_returning_none_abstains(start_broker: StartBroker, engine: Engine, tmp_path: Path) -> None:
    broker = start_broker(engine, plugins=recording_plugins(tmp_path / "records.jsonl",
                                                            allow_all=True))
    with RawClient(broker.port, "asker") as asker:
        assert asker.subscribe([("deny/x", 1)]) == [0x80], "a plugin returning False must still deny"
        assert asker.subscribe([("abstain/x", 1)]) == [1], "None from one plugin, True from another: allowed"
        asker.publish("abstain/x", b"through", qos=1)
        assert asker.recv_publish(ack=True).payload == b"through"


@pytest.mark.parametrize("engine", ["mqchat", "amqtt"])
def test_every_plugin_is_closed_at_shutdown(start_broker: StartBroker, engine: Engine, tmp_path: Path) -> None:
    # Named in issue #3, but amqtt 0.12.1 does close its plugins (0.11 did not); kept on both
    # engines as a regression test.
    records = tmp_path / "records.jsonl"
    broker = start_broker(engine, plugins=recording_plugins(records))
    with RawClient(broker.port, "present"):
        pass
    assert broker.stop() == 0, broker.log_tail()
    assert len(read_records(records, "close")) == 1, broker.log_tail()
