"""Hostile input over TCP (issue #3): raw MQTT bytes that break the protocol, and floods.

Each case opens a raw socket (after a proper CONNECT where the case says so), sends its bytes and
expects the server to close the connection within a few seconds, having sent nothing more
[MQTT-4.8.0-1] (or exactly the CONNACK refusal the spec asks for). Afterwards a normal client
must still connect, subscribe, publish and receive, and the broker's open file descriptors must
return to their baseline. Runs on our broker only; tests/broker/test_defects.py compares with
plain amqtt.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from mqchat.mqtt import codec
from tests.broker import launch
from tests.broker.conftest import StartBroker
from tests.broker.launch import BrokerProcess
from tests.broker.rawclient import (
    RawClient,
    assert_closed,
    check_serving,
    connect_raw,
    open_socket,
    publish,
    send_quietly,
    subscribe,
    unsubscribe,
    wait_closed,
)

pytestmark = pytest.mark.e2e

CLOSE_WITHIN_S = 3.0
CONNECT_TIMEOUT_S = 2
MAX_PACKET = 262_144  # broker.max_packet_bytes default


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    connect_first: bool = False
    answer: bytes = b""
    """What the server may send before closing (a CONNACK refusal); nothing by default."""


_c = connect_raw
mqtt_string = codec.encode_string
packet = codec.packet
CID = mqtt_string("hostile")
WILL = mqtt_string("w/t") + mqtt_string(b"bye")

BEFORE_CONNECT = [
    Case("garbage-binary", b"\xde\xad\xbe\xef\x00\x01\x02\x03"),
    Case("http-request", b"GET / HTTP/1.1\r\nHost: broker\r\n\r\n"),
    Case("tls-client-hello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32)),
    Case("pingreq-before-connect", codec.PINGREQ_BYTES),
    Case("publish-before-connect", publish("a/b", b"x")),
    Case("subscribe-before-connect", subscribe(1, [("a/b", 0)])),
    Case("disconnect-before-connect", codec.DISCONNECT_BYTES),
    Case("packet-type-0", b"\x00\x00"),
    Case("packet-type-15", b"\xf0\x00"),
    Case("remaining-length-5-bytes", b"\x10\xff\xff\xff\xff\x01"),
    Case("connect-fixed-header-flags", b"\x11" + _c(CID)[1:]),
    Case("connect-protocol-name-mqtx", _c(CID, protocol=b"MQTX")),
    Case("connect-protocol-name-lowercase", _c(CID, protocol=b"mqtt")),
    Case("connect-reserved-flag", _c(CID, flags=0x03)),
    Case("connect-will-qos-without-will-flag", _c(CID, flags=0x02 | 0x08)),
    Case("connect-will-retain-without-will-flag", _c(CID, flags=0x02 | 0x20)),
    Case("connect-will-qos-3", _c(CID + WILL, flags=0x02 | 0x04 | 0x18)),
    Case("connect-password-without-username", _c(CID + mqtt_string("secret"), flags=0x02 | 0x40)),
    Case("connect-client-id-invalid-utf8", _c(mqtt_string(b"id\xff\xfe"))),
    Case("connect-client-id-nul", _c(mqtt_string("id\u0000x"))),
    Case("connect-client-id-utf16-surrogate", _c(mqtt_string(b"id\xed\xa0\x80"))),
    Case("connect-client-id-overlong-utf8", _c(mqtt_string(b"id\xc0\x80"))),
    Case("connect-username-invalid-utf8", _c(CID + mqtt_string(b"user\xff"), flags=0x02 | 0x80)),
    Case("connect-will-topic-nul", _c(CID + mqtt_string("w/\u0000") + mqtt_string(b"bye"), flags=0x02 | 0x04)),
    Case("connect-will-topic-invalid-utf8", _c(CID + mqtt_string(b"w/\xff") + mqtt_string(b"bye"), flags=0x02 | 0x04)),
    Case("connect-truncated-protocol-name", b"\x10\x04\x00\x04MQ"),
    Case("connect-truncated-client-id", packet(0x10, mqtt_string("MQTT") + b"\x04\x02\x00\x3c" + b"\x00\x0aabc")),
    Case("connect-missing-will-message", _c(CID + mqtt_string("w/t"), flags=0x02 | 0x04)),
    Case("connect-trailing-bytes", _c(CID + b"\x00\x00")),
    Case("connect-announcing-16-mib", b"\x10" + codec.encode_remaining_length(16 * 1024 * 1024) + mqtt_string("MQTT")),
    # answered refusals [MQTT-3.1.2-2] [MQTT-3.1.3-8]: a CONNACK with the return code, then close
    Case("connect-mqtt-5", _c(b"\x00" + CID, level=5), answer=b"\x20\x02\x00\x01"),
    Case("connect-level-3", _c(CID, level=3), answer=b"\x20\x02\x00\x01"),
    Case("connect-empty-client-id-persistent", _c(mqtt_string(""), flags=0x00), answer=b"\x20\x02\x00\x02"),
]

AFTER_CONNECT = [
    Case("second-connect", codec.encode_connect("hostile")),
    Case("publish-qos-3", publish("a/b", b"x", qos=3, packet_id=7)),
    Case("publish-qos1-packet-id-0", publish("a/b", b"x", qos=1, packet_id=0)),
    Case("publish-dup-on-qos0", publish("a/b", b"x", dup=True)),
    Case("publish-topic-plus", publish("a/+/b", b"x")),
    Case("publish-topic-hash", publish("a/#", b"x")),
    Case("publish-topic-empty", publish("", b"x")),
    Case("publish-topic-invalid-utf8", publish(b"a/\xff\xfe", b"x")),
    Case("publish-topic-nul", publish("a/\u0000", b"x")),
    Case("publish-truncated-topic-length", b"\x30\x01\x00"),
    Case("publish-topic-past-the-end", b"\x32\x04\x00\x10ab"),
    Case("publish-qos1-without-packet-id", b"\x32\x03\x00\x01a"),
    Case("subscribe-flags-0000", subscribe(1, [("a/b", 0)], first_byte=0x80)),
    Case("unsubscribe-flags-0000", unsubscribe(1, ["a/b"], first_byte=0xA0)),
    Case("pubrel-flags-0000", b"\x60\x02\x00\x01"),
    Case("puback-flags-0010", b"\x42\x02\x00\x01"),
    Case("pingreq-flags-0001", b"\xc1\x00"),
    Case("subscribe-no-filters", b"\x82\x02\x00\x01"),
    Case("subscribe-qos-3", subscribe(1, [("a/b", 3)])),
    Case("subscribe-reserved-bits", subscribe(1, [("a/b", 0x05)])),
    Case("subscribe-empty-filter", subscribe(1, [("", 0)])),
    Case("subscribe-hash-not-last", subscribe(1, [("a/#/b", 0)])),
    Case("subscribe-plus-inside-a-level", subscribe(1, [("a+", 0)])),
    Case("subscribe-hash-inside-a-level", subscribe(1, [("#a", 0)])),
    Case("subscribe-filter-invalid-utf8", subscribe(1, [(b"a/\xff", 0)])),
    Case("subscribe-filter-nul", subscribe(1, [("a/\u0000", 0)])),
    Case("subscribe-truncated-filter", b"\x82\x05\x00\x01\x00\x0aa"),
    Case("subscribe-missing-qos-byte", b"\x82\x05\x00\x01\x00\x01a"),
    Case("unsubscribe-no-filters", b"\xa2\x02\x00\x01"),
    Case("unsubscribe-empty-filter", unsubscribe(1, [""])),
    Case("connack-from-client", b"\x20\x02\x00\x00"),
    Case("suback-from-client", b"\x90\x03\x00\x01\x00"),
    Case("unsuback-from-client", b"\xb0\x02\x00\x01"),
    Case("pingresp-from-client", b"\xd0\x00"),
    Case("packet-type-0-after-connect", b"\x00\x00"),
    Case("packet-type-15-after-connect", b"\xf0\x00"),
    Case("remaining-length-5-bytes-after-connect", b"\x30\xff\xff\xff\xff\x01"),
    Case("publish-over-max-packet-bytes", b"\x30" + codec.encode_remaining_length(MAX_PACKET + 1) + b"\x00\x03a/b"),
    Case("publish-announcing-16-mib", b"\x30" + codec.encode_remaining_length(16 * 1024 * 1024) + b"\x00\x03a/b"),
    Case("garbage-after-connect", b"\x00\x01\x02\x03\xff\xfe\xfd\xfc"),
]
AFTER_CONNECT = [Case(c.name, c.data, connect_first=True, answer=c.answer) for c in AFTER_CONNECT]
CASES = BEFORE_CONNECT + AFTER_CONNECT


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    # The connect timeout stays well above CLOSE_WITHIN_S, so it cannot be what closes a socket
    # that sent a violation before CONNECT.
    b = launch.start_broker("mqchat", tmp_path_factory.mktemp("hostile"),
                            env={"MQCHAT_BROKER__CONNECT_TIMEOUT_S": "30"})
    yield b
    b.kill()


def run_case(port: int, case: Case) -> None:
    """Send ``case`` and assert the server closes the connection, answering nothing else."""
    sock = RawClient(port, "hostile").sock if case.connect_first else open_socket(port)
    with sock:
        send_quietly(sock, case.data)
        assert_closed(sock, CLOSE_WITHIN_S, what=f"{case.name} ({case.data[:24]!r})", allowed=case.answer)


def wait_fds(broker: BrokerProcess, baseline: int, within: float = 5.0) -> int:
    """Wait until the broker holds at most ``baseline`` descriptors; returns the last count."""
    deadline = time.monotonic() + within
    while (count := broker.fd_count()) > baseline and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def test_there_are_at_least_30_hostile_cases() -> None:
    assert len(CASES) >= 30
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_closes_the_connection_and_the_broker_keeps_serving(broker: BrokerProcess, case: Case) -> None:
    run_case(broker.port, case)
    check_serving(broker.port, "hostile")
    assert broker.alive()


def test_hostile_inputs_leave_no_file_descriptor_behind(broker: BrokerProcess) -> None:
    check_serving(broker.port, "warmup")
    baseline = wait_fds(broker, broker.fd_count())
    for case in CASES:
        with contextlib.suppress(AssertionError):  # each case's own test reports it
            run_case(broker.port, case)
    check_serving(broker.port, "after-all")
    count = wait_fds(broker, baseline)
    assert count <= baseline, f"the broker holds {count} descriptors after the hostile cases; {baseline} before"


def test_a_thousand_sockets_without_connect_leave_no_file_descriptor_behind(broker: BrokerProcess) -> None:
    check_serving(broker.port, "warmup")
    baseline = wait_fds(broker, broker.fd_count())
    socks = [socket.create_connection(("127.0.0.1", broker.port), timeout=5) for _ in range(1000)]
    check_serving(broker.port, "during-flood")
    for s in socks:
        s.close()
    count = wait_fds(broker, baseline)
    assert count <= baseline, f"the broker holds {count} descriptors after 1,000 closed sockets; {baseline} before"
    check_serving(broker.port, "after-flood")


def test_slowloris_sockets_are_all_closed_after_the_connect_timeout(start_broker: StartBroker) -> None:
    broker = start_broker("mqchat", env={"MQCHAT_BROKER__CONNECT_TIMEOUT_S": str(CONNECT_TIMEOUT_S)})
    check_serving(broker.port, "warmup")
    baseline = wait_fds(broker, broker.fd_count())
    connect = codec.encode_connect("slowloris")
    socks = [open_socket(broker.port) for _ in range(50)]
    start = time.monotonic()
    try:
        for i in range(len(connect) - 1):  # every socket trickles its CONNECT, never finishing it
            for s in socks:
                send_quietly(s, connect[i : i + 1])
            if time.monotonic() - start > CONNECT_TIMEOUT_S + 2:
                break
            time.sleep(0.1)  # deliberately slow: one byte per socket every 0.1 s
        for s in socks:
            left = max(0.1, CONNECT_TIMEOUT_S + CLOSE_WITHIN_S - (time.monotonic() - start))
            assert_closed(s, left, what=f"a CONNECT trickled for more than the {CONNECT_TIMEOUT_S}s connect timeout")
    finally:
        for s in socks:
            s.close()
    count = wait_fds(broker, baseline)
    assert count <= baseline, f"the broker holds {count} descriptors after the slowloris sockets; {baseline} before"
    check_serving(broker.port, "after-slowloris")


def test_connect_and_disconnect_churn_leaves_no_file_descriptor_behind(broker: BrokerProcess) -> None:
    check_serving(broker.port, "warmup")
    baseline = wait_fds(broker, broker.fd_count())
    with RawClient(broker.port, "churn-watch") as watcher:
        assert watcher.subscribe([("will/churn", 0)]) == [0]
        for i in range(300):
            client = RawClient(broker.port, f"churn-{i % 7}", clean=i % 2 == 0,
                               will=("will/churn", b"x", 0, False))
            if i % 3:
                client.disconnect()
            else:
                client.drop()  # lost connection: its will is published
        watcher.collect(0.5)
    count = wait_fds(broker, baseline)
    assert count <= baseline, f"the broker holds {count} descriptors after 300 connections; {baseline} before"
    check_serving(broker.port, "after-churn")


# --- floods with authentication: the per-client publish rate ----------------------------------


def test_a_device_over_its_publish_rate_is_slowed_down_and_loses_nothing(start_broker: StartBroker) -> None:
    # docs/broker.md: a device over its rate is slowed down (its packets wait, then its socket is
    # not read); nothing is lost, nobody else waits; services have no rate limit.
    rate, burst, flood = 20, 10, 60
    b = start_broker("mqchat", auth=True, env={"MQCHAT_BROKER__PUBLISH_RATE_PER_S": str(rate),
                                               "MQCHAT_BROKER__PUBLISH_BURST": str(burst)})
    topic = "presence/uflood/phone"

    def login(user: str, service: bool = False) -> RawClient:
        return RawClient(b.port, f"{user}:phone", username=user, password=b.token(user, "phone", service=service))

    with login("svc-watch", service=True) as svc, login("uflood") as device, login("ubystander") as bystander:
        assert svc.subscribe([(topic, 1), ("svc/flood", 1)]) == [1, 1]
        start = time.monotonic()
        # valid presence payloads (anything else is dropped by the broker, docs/security.md)
        device.send(b"".join(publish(topic, b'{"status":"online","ts":%d}' % i) for i in range(flood)))
        time.sleep(0.2)  # deliberately: the broker is busy with the flood when the bystander pings
        ping_start = time.monotonic()
        bystander.ping(timeout=2)  # nobody else waits
        assert time.monotonic() - ping_start < 1.0, "another client waited behind a flooding one"
        got = [m.payload for m in svc.collect(0.2)]
        while len(got) < flood and time.monotonic() - start < 15:
            got += [m.payload for m in svc.collect(0.5)]
        took = time.monotonic() - start
        assert got == [b'{"status":"online","ts":%d}' % i for i in range(flood)], \
            f"a throttled device lost or reordered: {got}"
        expected = (flood - burst) / rate
        assert took >= expected * 0.6, f"{flood} publishes at {rate}/s (burst {burst}) took only {took:.2f}s"
        device.ping(timeout=10)  # slowed down, not disconnected
        # a service is not limited
        start = time.monotonic()
        svc.send(b"".join(publish("svc/flood", str(i).encode()) for i in range(flood)))
        got = []
        while len(got) < flood and time.monotonic() - start < 5:
            got += [m.payload for m in svc.collect(0.3)]
        assert len(got) == flood
        assert time.monotonic() - start < expected * 0.6, "a service client was rate limited"


def test_refused_credentials_get_a_connack_refusal_then_close(start_broker: StartBroker) -> None:
    b = start_broker("mqchat", auth=True)
    token = b.token("ualice", "phone")
    cases = {
        "wrong token": codec.encode_connect("ualice:phone", username="ualice", password="not-a-token"),
        "no password": codec.encode_connect("ualice:phone", username="ualice"),
        "no credentials": codec.encode_connect("ualice:phone"),
        "another device's client id": codec.encode_connect("ualice:tablet", username="ualice", password=token),
        "another user's name": codec.encode_connect("ualice:phone", username="ubob", password=token),
    }
    for what, data in cases.items():
        with open_socket(b.port) as s:
            s.sendall(data)
            try:
                got = wait_closed(s, CLOSE_WITHIN_S)
            except TimeoutError as exc:
                raise AssertionError(f"{what}: not closed ({exc})") from None
            assert got in (b"\x20\x02\x00\x04", b"\x20\x02\x00\x05"), f"{what}: expected CONNACK 0x04/0x05, got {got!r}"
    with RawClient(b.port, "ualice:phone", username="ualice", password=token) as alice:
        alice.ping()
