"""Slow consumers and big fan-outs on our broker, with real clients over loopback.

- A device that stops reading does not hold back the rest of its channel: the others get every
  message live; what the broker drops for the slow one (its queue behind the in-flight window is
  full) is counted by reason in the metrics and announced to that device alone by a gap notice on
  its user events topic, naming the channel and the seq range, so it can sync exactly that.
- A fan-out to more subscribers than one slice is delivered off the publisher's path: a small
  message on another topic published right after it is not held behind it, and messages on the
  big topic keep their order.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable

from broker.routing import FANOUT_SLICE
from harness.ports import free_port
from mqchat.mqtt import codec
from tests.broker.conftest import StartBroker
from tests.broker.launch import BrokerProcess, Engine
from tests.broker.rawclient import RawClient
from tests.broker.test_defects import events, login, make_channel

INFLIGHT, QUEUED, MESSAGES = 5, 20, 100


def metric(port: int, name: str) -> float:
    """One sample of the broker's ``/metrics`` (``name`` with its labels); 0 when absent."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_a_device_that_stops_reading_loses_nothing_silently_and_holds_nobody_back(
        start_broker: StartBroker) -> None:
    ops = free_port()
    broker = start_broker("mqchat", auth=True, env={
        "MQCHAT_BROKER__MAX_INFLIGHT": str(INFLIGHT), "MQCHAT_BROKER__MAX_QUEUED": str(QUEUED),
        "MQCHAT_OPS__BROKER_PORT": str(ops)})
    channel = make_channel(broker, ["ualice", "uslow"])
    stream = f"ch/{channel}"
    with login(broker, "ualice") as alice, login(broker, "uslow") as slow, \
            login(broker, "svc-tests", "b1") as bridge:
        assert alice.subscribe([(stream, 1)]) == [1]
        assert slow.subscribe([(stream, 1), (events("uslow"), 1)]) == [1, 1]
        # the slow device now reads nothing (no PUBACK either) while the channel goes on
        fast = []
        for seq in range(1, MESSAGES + 1):
            bridge.publish(stream, json.dumps({"seq": seq, "channel": channel}).encode(), qos=1)
            fast.append(json.loads(alice.recv_publish(ack=True).payload)["seq"])  # each live, at once
        assert fast == list(range(1, MESSAGES + 1)), "the fast member did not get every message live, in order"

        dropped = MESSAGES - INFLIGHT - QUEUED
        assert metric(ops, 'mqchat_broker_dropped_total{reason="queue_full"}') == dropped
        # the slow device reads again: its window, then the gap notice, then its queue
        got = slow.collect(3.0)
        seqs = [json.loads(m.payload)["seq"] for m in got if m.topic == stream]
        notices = [json.loads(m.payload) for m in got if m.topic == events("uslow")]
        assert len(notices) == 1, f"expected one gap notice, got {notices}"
        notice = notices[0]
        assert (notice["type"], notice["reason"], notice["other"]) == ("gap", "queue_full", 0)
        assert notice["channels"] == [{"channel": channel, "missed": dropped, "first_seq": INFLIGHT + 1,
                                       "last_seq": INFLIGHT + dropped}]
        gap = range(notice["channels"][0]["first_seq"], notice["channels"][0]["last_seq"] + 1)
        assert sorted([*seqs, *gap]) == list(range(1, MESSAGES + 1)), "live + the announced gap must be everything"
        assert seqs == sorted(seqs)
        assert metric(ops, "mqchat_broker_gap_notices_total") == 1
        # told once: the next message comes alone
        bridge.publish(stream, json.dumps({"seq": MESSAGES + 1}).encode(), qos=1)
        assert [json.loads(m.payload)["seq"] for m in slow.collect(1.0)] == [MESSAGES + 1]


def test_a_big_fanout_does_not_hold_back_a_small_message_and_keeps_its_order(
        shared_broker: Callable[[Engine], BrokerProcess]) -> None:
    broker = shared_broker("mqchat")
    n = FANOUT_SLICE + 50
    crowd = [RawClient(broker.port, f"fan-crowd-{i}") for i in range(n)]
    try:
        for c in crowd:
            assert c.subscribe([("fan/big", 1)]) == [1]
        with RawClient(broker.port, "fan-observer") as observer, RawClient(broker.port, "fan-pub") as pub:
            # subscribed last: the observer is in the fan-out's last slice
            assert observer.subscribe([("fan/big", 1), ("fan/small", 1)]) == [1, 1]
            big = [codec.encode_publish(codec.encode_topic("fan/big"), f"big-{i}".encode(), 1, False, i + 1)
                   for i in range(3)]
            small = codec.encode_publish(codec.encode_topic("fan/small"), b"small", 1, False, 10)
            pub.send(b"".join([*big, small]))  # one read on the broker: all four in one batch
            got = [(m.topic, m.payload) for m in observer.collect(3.0)]
            assert got[0] == ("fan/small", b"small"), f"the small message waited behind the fan-out: {got}"
            assert [p for t, p in got if t == "fan/big"] == [b"big-0", b"big-1", b"big-2"]
            for c in (crowd[0], crowd[-1]):
                assert [m.payload for m in c.collect(1.0)] == [b"big-0", b"big-1", b"big-2"]
    finally:
        for c in crowd:
            c.close()
