"""Per-client limits of our broker (docs/broker.md): the in-flight window and the queue bound.

Plain amqtt has neither setting, so these run on our broker only.
"""

from __future__ import annotations

import contextlib

import pytest

from tests.broker.conftest import StartBroker
from tests.broker.rawclient import RawClient

pytestmark = pytest.mark.e2e


def test_at_most_max_inflight_unacknowledged_messages_are_sent_and_the_rest_wait(start_broker: StartBroker) -> None:
    broker = start_broker("mqchat", env={"MQCHAT_BROKER__MAX_INFLIGHT": "2"})
    with RawClient(broker.port, "slow-reader") as reader, RawClient(broker.port, "writer") as writer:
        assert reader.subscribe([("w/x", 1)]) == [1]
        for i in range(5):
            writer.publish("w/x", f"m{i}".encode(), qos=1)
        window = reader.collect(1.0, ack=False)
        assert [m.payload for m in window] == [b"m0", b"m1"], f"in flight with a window of 2: {window}"
        reader.puback(window[0].packet_id or 0)
        third = reader.recv_publish(timeout=2)
        assert third.payload == b"m2", f"one acknowledgement frees one slot: {third}"
        reader.expect_nothing(0.5)
        reader.puback(window[1].packet_id or 0)
        reader.puback(third.packet_id or 0)
        rest = reader.collect(1.0, ack=True)
        assert [m.payload for m in rest] == [b"m3", b"m4"]
        assert not any(m.dup for m in [*window, third, *rest]), "nothing was sent twice"


def test_an_offline_queue_keeps_the_newest_max_queued_messages(start_broker: StartBroker) -> None:
    broker = start_broker("mqchat", env={"MQCHAT_BROKER__MAX_QUEUED": "3"})
    with contextlib.ExitStack() as stack, RawClient(broker.port, "watcher") as watcher:
        assert watcher.subscribe([("will/away", 1)]) == [1]
        away = stack.enter_context(RawClient(broker.port, "away", clean=False, will=("will/away", b"gone", 1, False)))
        assert away.subscribe([("q/away", 1)]) == [1]
        assert watcher.subscribe([("q/away", 1)]) == [1]
        away.drop()
        assert watcher.recv_publish(timeout=5, ack=True).topic == "will/away"
        for i in range(5):
            watcher.publish("q/away", f"m{i}".encode(), qos=1)
            assert watcher.recv_publish(ack=True).payload == f"m{i}".encode()  # routed, so queued for "away"
        with RawClient(broker.port, "away", clean=False) as back:
            assert back.session_present
            got = back.collect(1.0)
            assert [m.payload for m in got] == [b"m2", b"m3", b"m4"], f"a queue bound of 3 keeps the newest: {got}"
