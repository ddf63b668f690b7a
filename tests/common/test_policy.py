from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqchat import policy
from mqchat.auth import Principal
from mqchat.policy import Action

ME = Principal("alice", "phone", "device", 0)
SERVICE = Principal("svc-bridge", "b0", "service", 0)


def decide(action: Action, topic: str, channels: frozenset[str] = frozenset({"c1"}),
           shares: bool | None = None) -> bool:
    verdict = policy.authorize(ME, action, topic)
    return policy.resolve(verdict, channels=channels, shares_channel=shares)


@pytest.mark.parametrize(("action", "topic", "allowed"), [
    (Action.PUBLISH, "in/alice/phone/c1", True),
    (Action.PUBLISH, "in/alice/phone/c9", True),  # membership is the bridge's to refuse, with an error ack
    (Action.PUBLISH, "in/bob/phone/c1", False),  # forged sender
    (Action.PUBLISH, "in/alice/tablet/c1", False),  # another device's identity
    (Action.PUBLISH, "ch/c1", False),  # only the bridge writes streams
    (Action.PUBLISH, "dev/alice/phone/ack", False),
    (Action.PUBLISH, "presence/alice/phone", True),
    (Action.PUBLISH, "presence/alice", False),
    (Action.PUBLISH, "presence/bob/phone", False),
    (Action.PUBLISH, "typing/c1/alice", True),
    (Action.PUBLISH, "typing/c9/alice", False),
    (Action.PUBLISH, "typing/c1/bob", False),
    (Action.PUBLISH, "$SYS/x", False),
    (Action.SUBSCRIBE, "ch/c1", True),
    (Action.SUBSCRIBE, "ch/c9", False),
    (Action.SUBSCRIBE, "ch/+", False),
    (Action.SUBSCRIBE, "#", False),
    (Action.SUBSCRIBE, "$SYS/#", False),
    (Action.SUBSCRIBE, "in/+/+/+", False),
    (Action.SUBSCRIBE, "$share/bridges/in/+/+/+", False),  # shared subscriptions are for services
    (Action.SUBSCRIBE, "$share/g/ch/c1", False),
    (Action.PUBLISH, "bridge/fwd/b0/in/alice/phone/c1", False),  # only bridges forward sends
    (Action.SUBSCRIBE, "dev/alice/phone/ack", True),
    (Action.SUBSCRIBE, "dev/alice/tablet/ack", False),
    (Action.SUBSCRIBE, "user/alice/events", True),
    (Action.SUBSCRIBE, "user/bob/events", False),
    (Action.SUBSCRIBE, "presence/alice", True),
    (Action.SUBSCRIBE, "presence/alice/tablet", True),
    (Action.SUBSCRIBE, "typing/c1/+", True),
    (Action.SUBSCRIBE, "typing/c9/+", False),
    (Action.RECEIVE, "ch/c1", True),
    (Action.RECEIVE, "ch/c9", False),  # removed from c9 after subscribing: deliveries stop
])
def test_device_rules(action: Action, topic: str, allowed: bool) -> None:
    assert decide(action, topic) is allowed


def test_presence_of_others_depends_on_sharing_a_channel() -> None:
    verdict = policy.authorize(ME, Action.SUBSCRIBE, "presence/bob")
    assert verdict == policy.if_contact("bob")
    assert policy.resolve(verdict, channels=frozenset(), shares_channel=True)
    assert not policy.resolve(verdict, channels=frozenset(), shares_channel=False)


def test_services_may_do_anything() -> None:
    assert policy.authorize(SERVICE, Action.SUBSCRIBE, "in/+/+/+") == policy.ALLOW
    assert policy.authorize(SERVICE, Action.SUBSCRIBE, "$share/bridges/in/+/+/+") == policy.ALLOW
    assert policy.authorize(SERVICE, Action.PUBLISH, "ch/c1") == policy.ALLOW


def test_denials_say_why() -> None:
    assert policy.authorize(ME, Action.SUBSCRIBE, "#").reason
    assert policy.authorize(ME, Action.PUBLISH, "in/bob/phone/c1").reason == "not your send topic"


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = policy.TokenBucket(rate=10, burst=3, now=0.0)
    assert [bucket.allow(0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.allow(0.05)  # half a token
    assert bucket.allow(0.1)


@given(st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=200))
def test_token_bucket_reservations_keep_the_rate(gaps: list[float]) -> None:
    """A caller that waits what ``reserve`` says never acts faster than burst + rate x elapsed."""
    rate, burst = 20.0, 5
    bucket = policy.TokenBucket(rate, burst, now=0.0)
    now = 0.0
    for n, gap in enumerate(gaps, start=1):
        now += gap
        now += bucket.reserve(now)  # act only after the wait
        assert n <= burst + rate * now + 1e-6


# --- services scoped to their topics (issue #17) ---------------------------------------------------

BRIDGE = Principal("svc-bridge", "b0", "service", 0, service="bridge")
API = Principal("svc-api", "a0", "service", 0, service="api")
WORKERS = Principal("svc-workers", "w0", "service", 0, service="workers")


@pytest.mark.parametrize(("who", "action", "topic", "allowed"), [
    (BRIDGE, Action.SUBSCRIBE, "in/+/+/+", True),
    (BRIDGE, Action.SUBSCRIBE, "$share/bridges/in/+/+/+", True),
    (BRIDGE, Action.RECEIVE, "in/u1/d1/c1", True),
    (BRIDGE, Action.PUBLISH, "ch/c1", True),
    (BRIDGE, Action.PUBLISH, "dev/u1/d1/ack", True),
    (BRIDGE, Action.SUBSCRIBE, "#", False),
    (BRIDGE, Action.SUBSCRIBE, "presence/u1", False),
    (BRIDGE, Action.PUBLISH, "presence/u1", False),
    (BRIDGE, Action.PUBLISH, "user/u1/events", False),
    (BRIDGE, Action.PUBLISH, "in/u1/d1/c1", False),
    (API, Action.PUBLISH, "user/u1/events", True),
    (API, Action.PUBLISH, "ch/c1", False),
    (API, Action.SUBSCRIBE, "in/+/+/+", False),
    (WORKERS, Action.PUBLISH, "presence/u1", True),
    (WORKERS, Action.PUBLISH, "presence/u1/d1", False),
    (WORKERS, Action.PUBLISH, "ch/c1", False),
    (WORKERS, Action.SUBSCRIBE, "presence/u1", False),
    # the presence ingester (external brokers): device statuses and wills, shared or not
    (WORKERS, Action.SUBSCRIBE, "presence/+/+", True),
    (WORKERS, Action.SUBSCRIBE, "$share/presence/presence/+/+", True),
    (WORKERS, Action.SUBSCRIBE, "$share//presence/+/+", False),
    (WORKERS, Action.SUBSCRIBE, "presence/#", False),
    (WORKERS, Action.SUBSCRIBE, "presence/u1/+", False),
    (WORKERS, Action.RECEIVE, "presence/u1/d1", True),
    (WORKERS, Action.RECEIVE, "presence/u1", False),
    (WORKERS, Action.RECEIVE, "in/u1/d1/c1", False),
])
def test_a_scoped_service_token_grants_only_its_services_topics(who: Principal, action: Action, topic: str,
                                                                allowed: bool) -> None:
    assert (policy.authorize(who, action, topic).kind == "allow") is allowed


def test_a_scoped_bridge_may_forward_sends_to_another_bridge_and_nothing_else_there() -> None:
    from mqchat import auth, topics
    from mqchat.policy import Action, authorize

    bridge = auth.Principal("svc-bridge", "b0", "service", expires_at=0, service="bridge")
    send = topics.send("u1", "d1", "c1")
    assert authorize(bridge, Action.SUBSCRIBE, topics.forward_filter("b1")).kind == "allow"
    assert authorize(bridge, Action.PUBLISH, topics.forward_topic("b1", send)).kind == "allow"
    assert authorize(bridge, Action.RECEIVE, topics.forward_topic("b1", send)).kind == "allow"
    assert authorize(bridge, Action.PUBLISH, "bridge/fwd/b1/ch/c1").kind == "deny"
    api = auth.Principal("svc-api", "a0", "service", expires_at=0, service="api")
    assert authorize(api, Action.PUBLISH, topics.forward_topic("b1", send)).kind == "deny"
