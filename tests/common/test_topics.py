from __future__ import annotations

import pytest

from mqchat import topics
from mqchat.errors import InvalidId, InvalidTopic


def test_builders_and_parser_agree() -> None:
    cases = [
        (topics.send("u1", "d1", "c1"), topics.Send("u1", "d1", "c1")),
        (topics.stream("c1"), topics.Stream("c1")),
        (topics.ack("u1", "d1"), topics.Ack("u1", "d1")),
        (topics.user_events("u1"), topics.UserEvents("u1")),
        (topics.device_presence("u1", "d1"), topics.DevicePresence("u1", "d1")),
        (topics.user_presence("u1"), topics.UserPresence("u1")),
        (topics.typing("c1", "u1"), topics.Typing("c1", "u1")),
    ]
    for topic, parsed in cases:
        assert topics.parse(topic) == parsed


def test_contract_spellings() -> None:
    assert topics.send("u", "d", "c") == "in/u/d/c"
    assert topics.stream("c") == "ch/c"
    assert topics.ack("u", "d") == "dev/u/d/ack"
    assert topics.user_events("u") == "user/u/events"
    assert topics.device_presence("u", "d") == "presence/u/d"
    assert topics.user_presence("u") == "presence/u"
    assert topics.typing("c", "u") == "typing/c/u"
    assert topics.SEND_FILTER == "in/+/+/+"
    assert topics.shared("bridges", topics.SEND_FILTER) == "$share/bridges/in/+/+/+"


@pytest.mark.parametrize("bad", ["u/x", "u+", "#", ""])
def test_builders_refuse_ids_that_would_change_the_topic(bad: str) -> None:
    with pytest.raises(InvalidId):
        topics.send(bad, "d", "c")


@pytest.mark.parametrize("topic", [
    "", "in/u/d", "in/u/d/c/extra", "ch/", "ch/a+b", "dev/u/d/nack", "user/u/other", "typing/c",
    "$SYS/broker", "other/x", "ch/" + "x" * 65, "x" * 600,
])
def test_parse_refuses_what_is_not_in_the_grammar(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        topics.parse(topic)


def test_filters_allow_only_the_typing_wildcard() -> None:
    assert topics.parse_filter("typing/c1/+") == topics.Typing("c1", None)
    assert topics.parse_filter("ch/c1") == topics.Stream("c1")
    for bad in ("#", "ch/+", "ch/#", "in/+/+/+", "$SYS/#", "$share/g/ch/c1", "typing/+/u", "typing/c1/#"):
        with pytest.raises(InvalidTopic):
            topics.parse_filter(bad)


def test_forwarding_topics_wrap_a_send_topic_and_unwrap_only_their_own() -> None:
    send = topics.send("u1", "d1", "c1")
    assert topics.forward_topic("b2", send) == "bridge/fwd/b2/in/u1/d1/c1"
    assert topics.unforward(topics.forward_topic("b2", send)) == send
    assert topics.forward_filter("b2") == "bridge/fwd/b2/in/+/+/+"
    assert topics.unforward(send) is None
    assert topics.unforward("bridge/fwd/b2") is None
