"""Shared subscriptions (``$share/{group}/{filter}``) on the embedded broker, over real sockets.

MQTT 5 semantics applied to 3.1.1 clients, as Mosquitto and EMQX do: each message to ONE member of
each group, round robin skipping members whose in-flight window is full, no retained messages for
a shared subscription, and a member's unacknowledged messages go to another member when it
disconnects. (The comparison with plain amqtt is in test_defects.py.)
"""

from __future__ import annotations

import pytest

from mqchat.mqtt.codec import Publish
from tests.broker.conftest import StartBroker
from tests.broker.rawclient import RawClient

pytestmark = pytest.mark.e2e


def payloads(messages: list[Publish]) -> list[bytes]:
    return [m.payload for m in messages]


def test_messages_go_round_robin_to_the_members_and_each_group_gets_one_copy(start_broker: StartBroker) -> None:
    broker = start_broker("mqchat")
    with RawClient(broker.port, "a") as a, RawClient(broker.port, "b") as b, \
            RawClient(broker.port, "other-group") as other, RawClient(broker.port, "plain") as plain, \
            RawClient(broker.port, "pub") as pub:
        assert a.subscribe([("$share/g/s/+", 1)]) == [1]
        assert b.subscribe([("$share/g/s/+", 1)]) == [1]
        assert other.subscribe([("$share/h/s/+", 1)]) == [1]
        assert plain.subscribe([("s/+", 1)]) == [1]
        sent = [b"m%d" % i for i in range(6)]
        for body in sent:
            pub.publish("s/x", body, qos=1)
        got_a, got_b = payloads(a.collect(0.5)), payloads(b.collect(0.2))
        assert (got_a, got_b) == ([b"m0", b"m2", b"m4"], [b"m1", b"m3", b"m5"])
        assert payloads(other.collect(0.2)) == sent, "the only member of group h gets every message"
        assert payloads(plain.collect(0.2)) == sent, "a plain subscriber is not affected by the groups"


def test_after_unsubscribing_a_member_gets_nothing_more(start_broker: StartBroker) -> None:
    broker = start_broker("mqchat")
    with RawClient(broker.port, "a") as a, RawClient(broker.port, "b") as b, RawClient(broker.port, "pub") as pub:
        assert a.subscribe([("$share/g/s/x", 1)]) == [1]
        assert b.subscribe([("$share/g/s/x", 1)]) == [1]
        a.send(bytes([0xA2]) + bytes([2 + 2 + len("$share/g/s/x")]) + b"\x00\x09"
               + len("$share/g/s/x").to_bytes(2, "big") + b"$share/g/s/x")
        first, _ = a.read(what="UNSUBACK")
        assert first == 0xB0
        for i in range(4):
            pub.publish("s/x", b"m%d" % i, qos=1)
        assert payloads(b.collect(0.5)) == [b"m0", b"m1", b"m2", b"m3"]
        a.expect_nothing(0.2)


@pytest.mark.parametrize("bad", ["$share//s/x", "$share/g", "$share/g/", "$share/+/s/x", "$share/#"])
def test_an_invalid_share_is_refused_and_the_connection_stays_open(start_broker: StartBroker, bad: str) -> None:
    broker = start_broker("mqchat")
    with RawClient(broker.port, "sharer") as sharer:
        assert sharer.subscribe([(bad, 1), ("s/x", 1)]) == [0x80, 1], bad
        sharer.ping()


def test_no_retained_message_is_sent_for_a_shared_subscription(start_broker: StartBroker) -> None:
    broker = start_broker("mqchat")
    with RawClient(broker.port, "pub") as pub:
        pub.publish("r/x", b"kept", qos=1, retain=True)
    with RawClient(broker.port, "sharer") as sharer, RawClient(broker.port, "plain") as plain:
        assert sharer.subscribe([("$share/g/r/x", 1)]) == [1]
        assert plain.subscribe([("r/x", 1)]) == [1]
        assert payloads([plain.recv_publish(ack=True)]) == [b"kept"]
        sharer.expect_nothing(0.3)


def test_a_member_with_a_full_window_is_skipped(start_broker: StartBroker) -> None:
    broker = start_broker("mqchat", env={"MQCHAT_BROKER__MAX_INFLIGHT": "2"})
    with RawClient(broker.port, "slow") as slow, RawClient(broker.port, "fast") as fast, \
            RawClient(broker.port, "pub") as pub:
        assert slow.subscribe([("$share/g/s/x", 1)]) == [1]
        assert fast.subscribe([("$share/g/s/x", 1)]) == [1]
        got_fast: list[bytes] = []
        for i in range(8):
            pub.publish("s/x", b"m%d" % i, qos=1)
            if i % 2 or i > 3:  # the fast member acknowledges each message as it comes
                got_fast.append(fast.recv_publish(ack=True).payload)
        got_slow = payloads(slow.collect(0.5, ack=False))
        assert got_slow == [b"m0", b"m2"], "two in flight, never acknowledged: the window is full"
        assert got_fast == [b"m1", b"m3", b"m4", b"m5", b"m6", b"m7"]
        fast.expect_nothing(0.2)


def test_unacknowledged_messages_go_to_another_member_when_one_disconnects(start_broker: StartBroker) -> None:
    broker = start_broker("mqchat", env={"MQCHAT_BROKER__MAX_INFLIGHT": "2"})
    with RawClient(broker.port, "lost") as lost, RawClient(broker.port, "stays") as stays, \
            RawClient(broker.port, "pub") as pub:
        assert lost.subscribe([("$share/g/s/x", 1)]) == [1]
        assert stays.subscribe([("$share/g/s/x", 1)]) == [1]
        pub.publish("s/x", b"m0", qos=1)  # → lost
        assert payloads([lost.recv_publish()]) == [b"m0"]  # not acknowledged
        pub.publish("s/x", b"m1", qos=1)  # → stays
        assert payloads([stays.recv_publish(ack=True)]) == [b"m1"]
        pub.publish("s/x", b"m2", qos=1)  # → lost, not acknowledged
        assert payloads([lost.recv_publish()]) == [b"m2"]
        lost.drop()
        assert payloads(stays.collect(1.0)) == [b"m0", b"m2"], "the lost member's messages, in order"
        pub.publish("s/x", b"m3", qos=1)
        assert payloads([stays.recv_publish(ack=True)]) == [b"m3"], "the remaining member takes everything"


def test_a_device_may_not_subscribe_shared_and_a_service_may(start_broker: StartBroker) -> None:
    broker = start_broker("mqchat", auth=True)
    device = RawClient(broker.port, "ualice:phone", username="ualice", password=broker.token("ualice", "phone"))
    service = RawClient(broker.port, "svc-bridge:b0", username="svc-bridge",
                        password=broker.token("svc-bridge", "b0", service=True))
    with device, service:
        assert device.subscribe([("$share/bridges/in/+/+/+", 1)]) == [0x80]
        assert service.subscribe([("$share/bridges/in/+/+/+", 1)]) == [1]
        device.publish("in/ualice/phone/c1", b"{}", qos=1)
        assert service.recv_publish(ack=True).topic == "in/ualice/phone/c1"


def test_two_instances_of_a_service_sharing_one_token_both_stay_connected(start_broker: StartBroker) -> None:
    """Replicas configured with the same ``auth.service_token`` get distinct client ids, so the
    broker does not take one's session over when the other connects."""
    from mqchat import lifecycle
    from mqchat.config import load_settings
    from tests.broker.launch import SECRET

    broker = start_broker("mqchat", auth=True)
    token = broker.token("svc-workers", "w", service=True)
    settings = load_settings(data_dir=broker.data_dir, auth={"secret": SECRET, "service_token": token})
    first = lifecycle.service_credentials(settings, "svc-workers", "w1-host")
    second = lifecycle.service_credentials(settings, "svc-workers", "w2-host")
    assert first[0] != second[0]
    with RawClient(broker.port, first[0], username=first[1], password=first[2]) as one, \
            RawClient(broker.port, second[0], username=second[1], password=second[2]) as two:
        assert one.subscribe([("s/x", 1)]) == [1]
        assert two.subscribe([("s/x", 1)]) == [1]
        one.ping()  # the first is still connected after the second's CONNECT
        two.ping()
