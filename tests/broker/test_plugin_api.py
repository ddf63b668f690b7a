"""The native plugin protocol, its decision semantics, and amqtt plugins beside native ones.

The engine runs in this test's event loop on a free port; clients are the blocking raw clients
of this suite, run in threads so the broker keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import pytest
from amqtt.contexts import Action as AmqttAction
from amqtt.errors import PluginLoadError
from amqtt.plugins.base import BasePlugin, BaseTopicPlugin

from broker import amqtt_adapter, plugin_api
from broker.engine import MqchatBroker
from broker.plugin_api import Action, AppMessage, Authenticator, ClientConnected, TopicAcl
from broker.plugin_chain import PluginChain
from broker.session import Session
from harness.ports import free_port
from mqchat.mqtt import codec
from mqchat.mqtt.codec import Publish
from tests.broker.rawclient import RawClient

T = TypeVar("T")
HERE = __name__
ANONYMOUS = "amqtt.plugins.authentication.AnonymousAuthPlugin"


def config(plugins: dict[str, Any], port: int = 0) -> dict[str, Any]:
    return {"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}}, "plugins": plugins}


def session(client_id: str = "c1") -> Session:
    return Session(client_id, max_inflight=10, max_queued=10)


# --- plugins used below -----------------------------------------------------------------------


class Answer:
    """A native plugin that answers every decision with ``answer`` and records the calls."""

    def __init__(self, answer: bool | None, *, fail: bool = False) -> None:
        self.answer = answer
        self.fail = fail
        self.calls: list[tuple[str, Action]] = []

    async def authenticate(self, session: Session) -> bool | None:
        if self.fail:
            raise RuntimeError("backend down")
        return self.answer

    async def topic_allowed(self, session: Session, topic: str, action: Action) -> bool | None:
        self.calls.append((topic, action))
        if self.fail:
            raise RuntimeError("backend down")
        return self.answer


class NativePrefixAcl:
    """Denies topics under ``native-deny/``, abstains under ``both-abstain/``, allows the rest."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    async def topic_allowed(self, session: Session, topic: str, action: Action) -> bool | None:
        self.seen.append((topic, action))
        if topic.startswith("native-deny/"):
            return False
        if topic.startswith("both-abstain/"):
            return None
        return True


class AmqttPrefixAcl(BaseTopicPlugin):  # type: ignore[misc]
    """An amqtt-API topic plugin: denies under ``deny_prefix``, abstains under ``amqtt-abstain/``
    and ``both-abstain/``; records the actions it is given (amqtt's enum) on the class."""

    seen: ClassVar[list[tuple[str, Any]]] = []

    @dataclass
    class Config:
        deny_prefix: str = "amqtt-deny/"

    async def topic_filtering(self, *, session: Any = None, topic: str | None = None,
                              action: Any = None) -> bool | None:
        assert topic is not None
        AmqttPrefixAcl.seen.append((topic, action))
        if topic.startswith(self.config.deny_prefix):
            return False
        if topic.startswith(("amqtt-abstain/", "both-abstain/")):
            return None
        return True


class AmqttContextUser(BasePlugin):  # type: ignore[misc]
    """An amqtt-API event plugin that works the broker through its context."""

    connected: ClassVar[list[str]] = []

    @dataclass
    class Config:
        pass

    async def on_broker_post_start(self) -> None:
        await self.context.add_subscription("watcher", "ctx/#", 1)
        await self.context.retain_message("ctx/retained", b"kept", 1)

    async def on_broker_client_connected(self, *, client_id: str, client_session: Any) -> None:
        AmqttContextUser.connected.append(client_id)
        assert self.context.get_session(client_id) is client_session
        await self.context.broadcast_message("ctx/hello", f"hi {client_id}".encode(), 1)


# --- the chain: decision semantics -----------------------------------------------------------


async def test_auth_needs_one_answer_and_all_answers_true() -> None:
    s = session()
    assert not await PluginChain().authenticate(s), "no authenticator: refused"
    assert not await PluginChain([Answer(None)]).authenticate(s), "only abstentions: refused"
    assert await PluginChain([Answer(None), Answer(True)]).authenticate(s)
    assert not await PluginChain([Answer(True), Answer(False)]).authenticate(s)


async def test_auth_fails_closed_on_an_exception() -> None:
    assert not await PluginChain([Answer(True), Answer(True, fail=True)]).authenticate(session())


async def test_topic_none_abstains_false_denies_and_exceptions_deny() -> None:
    s = session()
    assert await PluginChain().allowed(s, "a", Action.SUBSCRIBE), "no topic plugin: allowed"
    assert await PluginChain([Answer(None)]).allowed(s, "a", Action.SUBSCRIBE)
    assert await PluginChain([Answer(None), Answer(True)]).allowed(s, "a", Action.PUBLISH)
    assert not await PluginChain([Answer(True), Answer(False)]).allowed(s, "a", Action.RECEIVE)
    assert not await PluginChain([Answer(True, fail=True)]).allowed(s, "a", Action.RECEIVE)


class Now:
    """A topic plugin that can answer at once (``TopicAclNow``)."""

    def __init__(self, now: bool | None, *, fail: bool = False) -> None:
        self.now, self.fail = now, fail

    def topic_allowed_now(self, session: Session, topic: str, action: Action) -> bool | None:
        if self.fail:
            raise RuntimeError("boom")
        return self.now

    async def topic_allowed(self, session: Session, topic: str, action: Action) -> bool | None:
        return True


def test_a_delivery_is_decided_without_awaiting_only_when_every_topic_plugin_can() -> None:
    s = session()
    assert PluginChain([Now(True), Now(True)]).allowed_now(s, "t", Action.RECEIVE) is True
    assert PluginChain([Now(True), Now(False)]).allowed_now(s, "t", Action.RECEIVE) is False
    assert PluginChain([Now(None), Now(True)]).allowed_now(s, "t", Action.RECEIVE) is None, "undecided: await"
    assert PluginChain([Now(None), Now(False)]).allowed_now(s, "t", Action.RECEIVE) is False, "a deny is final"
    assert PluginChain([Now(True, fail=True)]).allowed_now(s, "t", Action.RECEIVE) is False, "fails closed"
    assert PluginChain([Now(True), Answer(True)]).allowed_now(s, "t", Action.RECEIVE) is None, \
        "a plugin that can only be awaited: the chain awaits"


async def test_a_deny_stops_the_chain() -> None:
    first, second = Answer(False), Answer(True)
    assert not await PluginChain([first, second]).allowed(session(), "t", Action.PUBLISH)
    assert first.calls == [("t", Action.PUBLISH)]
    assert second.calls == [], "plugins after a deny are not asked"


async def test_a_failing_hook_is_logged_and_the_others_still_run(caplog: pytest.LogCaptureFixture) -> None:
    heard: list[str] = []

    class Boom:
        async def on_client_connected(self, session: Session) -> None:
            raise RuntimeError("boom")

    class Ear:
        async def on_client_connected(self, session: Session) -> None:
            heard.append(session.client_id)

    with caplog.at_level(logging.ERROR, logger="broker.plugin_chain"):
        await PluginChain([Boom(), Ear()]).client_connected(session("dev"))
    assert heard == ["dev"]
    assert "Boom.on_client_connected failed" in caplog.text


def test_the_plugin_api_exports_what_it_lists() -> None:
    public = {name for name in vars(plugin_api) if not name.startswith("_")}
    assert set(plugin_api.__all__) <= public
    assert {name for name in public if isinstance(getattr(plugin_api, name), type)
            and getattr(plugin_api, name).__module__ == plugin_api.__name__} <= set(plugin_api.__all__)


def test_roles_are_read_from_the_methods_a_plugin_has() -> None:
    chain = PluginChain([Answer(True), NativePrefixAcl(), object()])
    assert len(chain.authenticators) == 1
    assert len(chain.acls) == 2
    assert chain.on_connected == []
    assert chain.on_message == []
    assert isinstance(Answer(True), Authenticator)
    assert isinstance(Answer(True), TopicAcl)
    assert not isinstance(NativePrefixAcl(), ClientConnected)


# --- the amqtt adapter ---------------------------------------------------------------------------


async def test_an_amqtt_plugin_gets_amqtts_arguments_through_the_adapter() -> None:
    AmqttPrefixAcl.seen.clear()
    broker = MqchatBroker(config({f"{HERE}.AmqttPrefixAcl": {"deny_prefix": "no/"}}))
    faces = amqtt_adapter.load(broker.config, broker)
    chain = PluginChain(faces)
    assert [type(f).__name__ for f in faces] == ["_Topics", "_Close"]
    assert not await chain.allowed(session(), "no/x", Action.RECEIVE)
    assert await chain.allowed(session(), "yes/x", Action.SUBSCRIBE)
    assert AmqttPrefixAcl.seen == [("no/x", AmqttAction.RECEIVE), ("yes/x", AmqttAction.SUBSCRIBE)]


async def test_an_amqtt_plugin_with_an_unknown_setting_does_not_load() -> None:
    broker = MqchatBroker(config({f"{HERE}.AmqttPrefixAcl": {"deny_prefx": "typo/"}}))
    with pytest.raises(PluginLoadError):
        amqtt_adapter.load(broker.config, broker)


# --- a running broker ---------------------------------------------------------------------------


@pytest.fixture
async def running() -> AsyncIterator[Callable[..., Any]]:
    """Start an engine on a free port: ``await running(config_plugins, native_plugins)``."""
    brokers: list[MqchatBroker] = []

    async def start(amqtt_plugins: dict[str, Any], native: list[object]) -> int:
        port = free_port()
        broker = MqchatBroker(config(amqtt_plugins, port), plugins=native)
        await broker.start()
        brokers.append(broker)
        return port

    yield start
    for broker in brokers:
        await broker.shutdown()


async def blocking(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


def fresh(client: RawClient) -> Publish:
    """The next PUBLISH that is not a resend (DUP) of one already read, acknowledged."""
    while (message := client.recv_publish(ack=True)).dup:
        pass
    return message


async def test_an_amqtt_plugin_and_a_native_plugin_decide_a_subscribe_side_by_side(
        running: Callable[..., Any]) -> None:
    AmqttPrefixAcl.seen.clear()
    native = NativePrefixAcl()
    port = await running({ANONYMOUS: {"allow_anonymous": True}, f"{HERE}.AmqttPrefixAcl": {}}, [native])
    client = await blocking(lambda: RawClient(port, "asker"))
    try:
        codes = await blocking(lambda: client.subscribe([
            ("native-deny/x", 1),    # native False, amqtt True  → denied
            ("amqtt-deny/x", 1),     # native True,  amqtt False → denied
            ("amqtt-abstain/x", 1),  # native True,  amqtt None  → granted (None abstains)
            ("both-abstain/x", 1),   # both None: nobody denies  → granted
            ("ok/x", 0),             # both True                 → granted at the QoS asked
        ]))
    finally:
        await blocking(client.close)
    assert codes == [0x80, 0x80, 1, 1, 0]
    assert ("amqtt-deny/x", Action.SUBSCRIBE) in native.seen, "the native plugin gets the native enum"
    assert ("native-deny/x", AmqttAction.SUBSCRIBE) not in AmqttPrefixAcl.seen, "a deny stops the chain"
    assert ("amqtt-abstain/x", AmqttAction.SUBSCRIBE) in AmqttPrefixAcl.seen, "the amqtt plugin gets amqtt's enum"


async def test_an_amqtt_plugin_works_the_broker_through_its_context(running: Callable[..., Any]) -> None:
    AmqttContextUser.connected.clear()
    messages: list[AppMessage] = []

    class Listener:
        async def on_message_received(self, session: Session, message: AppMessage) -> None:
            messages.append(message)

    port = await running({ANONYMOUS: {"allow_anonymous": True}, f"{HERE}.AmqttContextUser": {}}, [Listener()])
    # "watcher" was subscribed to ctx/# by the plugin at start, as a persistent session: it gets
    # the broadcast sent as each client connects, and the retained message when it subscribes.
    clients: list[RawClient] = []
    try:
        watcher = await blocking(lambda: RawClient(port, "watcher", clean=False))
        clients.append(watcher)
        assert watcher.session_present, "the plugin's add_subscription created a persistent session"
        own = await blocking(lambda: fresh(watcher))
        assert (own.topic, own.payload) == ("ctx/hello", b"hi watcher")
        other = await blocking(lambda: RawClient(port, "other"))
        clients.append(other)
        hello = await blocking(lambda: fresh(watcher))
        assert (hello.topic, hello.payload) == ("ctx/hello", b"hi other")
        assert await blocking(lambda: watcher.subscribe([("ctx/retained", 1)])) == [1]
        kept = await blocking(lambda: fresh(watcher))
        assert (kept.topic, kept.payload, kept.retain) == ("ctx/retained", b"kept", True)
        await blocking(lambda: other.publish("ctx/from-other", b"x", qos=1))
        seen = await blocking(lambda: fresh(watcher))
        assert seen.topic == "ctx/from-other"
    finally:
        for client in clients:
            await blocking(client.close)
    assert AmqttContextUser.connected == ["watcher", "other"]
    assert [m.topic for m in messages] == ["ctx/from-other"], "native event hooks run beside amqtt ones"


class EventLog:
    """A native plugin implementing every event hook; records them in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    async def on_broker_starting(self) -> None:
        self.events.append(("starting",))

    async def on_broker_started(self) -> None:
        self.events.append(("started",))

    async def on_client_connected(self, session: Session) -> None:
        self.events.append(("connected", session.client_id))

    async def on_client_subscribed(self, session: Session, topic: str, qos: int) -> None:
        self.events.append(("subscribed", session.client_id, topic, qos))

    async def on_client_unsubscribed(self, session: Session, topic: str) -> None:
        self.events.append(("unsubscribed", session.client_id, topic))

    async def on_message_received(self, session: Session, message: AppMessage) -> None:
        self.events.append(("message", session.client_id, message.topic, message.data, message.qos))

    async def on_will_published(self, session: Session, message: AppMessage) -> None:
        self.events.append(("will", session.client_id, message.topic, message.data, message.retain))

    async def on_client_disconnected(self, session: Session) -> None:
        self.events.append(("disconnected", session.client_id))

    async def on_broker_stopping(self) -> None:
        self.events.append(("stopping",))

    async def on_broker_stopped(self) -> None:
        self.events.append(("stopped",))

    async def close(self) -> None:
        self.events.append(("close",))


async def test_native_event_hooks_are_called_in_the_order_things_happen() -> None:
    log = EventLog()
    port = free_port()
    broker = MqchatBroker(config({ANONYMOUS: {"allow_anonymous": True}}, port), plugins=[log])
    await broker.start()
    try:
        def session_of_a_device() -> None:
            with RawClient(port, "dev", will=("will/dev", b"gone", 0, True)) as dev:
                assert dev.subscribe([("t/#", 1)]) == [1]
                dev.publish("t/x", b"hi", qos=1)
                assert dev.recv_publish(ack=True).payload == b"hi"
                dev.send(codec.encode_unsubscribe(dev.packet_id(), ["t/#"]))
                assert dev.read(what="UNSUBACK")[0] == 0xB0
                dev.drop()

        await blocking(session_of_a_device)
        async with asyncio.timeout(5):
            while ("disconnected", "dev") not in log.events:
                await asyncio.sleep(0.01)
    finally:
        await broker.shutdown()
    assert log.events == [
        ("starting",), ("started",),
        ("connected", "dev"), ("subscribed", "dev", "t/#", 1), ("message", "dev", "t/x", b"hi", 1),
        ("unsubscribed", "dev", "t/#"), ("will", "dev", "will/dev", b"gone", True), ("disconnected", "dev"),
        ("stopping",), ("stopped",), ("close",),
    ]
