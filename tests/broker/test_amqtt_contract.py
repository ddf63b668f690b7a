"""Pins the amqtt behaviour broker/ relies on, so an amqtt upgrade that changes it fails here first."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

import aiomqtt
import pytest
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.plugins.base import BaseTopicPlugin

from tests.conftest import free_port


class ProbeTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]
    """Records calls; answers ``None`` for topics under ``undecided/``."""

    calls: ClassVar[list[tuple[str, str]]] = []
    closed: ClassVar[int] = 0

    @dataclass
    class Config:
        pass

    async def topic_filtering(self, *, session: Any = None, topic: str | None = None,
                              action: Action | None = None) -> bool | None:
        assert topic is not None
        assert action is not None
        ProbeTopicPlugin.calls.append((action.value, topic))
        return None if topic.startswith("undecided/") else True

    async def close(self) -> None:
        ProbeTopicPlugin.closed += 1


@pytest.fixture
async def broker() -> Any:
    ProbeTopicPlugin.calls.clear()
    ProbeTopicPlugin.closed = 0
    port = free_port()
    b = Broker({"listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
                            "tests.broker.test_amqtt_contract.ProbeTopicPlugin": {}}})
    await b.start()
    yield b, port
    if b.transitions.state == "started":
        await b.shutdown()


async def test_none_from_a_topic_plugin_denies(broker: Any) -> None:
    _, port = broker
    async with aiomqtt.Client("127.0.0.1", port, identifier="probe") as c:
        denied = await c.subscribe("undecided/x", qos=1)
        allowed = await c.subscribe("decided/x", qos=1)
    code = denied[0]
    assert (code if isinstance(code, int) else code.value) == 0x80
    assert [r if isinstance(r, int) else r.value for r in allowed] == [1]


async def test_delivery_is_checked_with_the_receive_action(broker: Any) -> None:
    _, port = broker
    async with aiomqtt.Client("127.0.0.1", port, identifier="probe") as c:
        await c.subscribe("decided/x", qos=1)
        await c.publish("decided/x", b"1", qos=1)
        async with asyncio.timeout(5):
            async for _ in c.messages:
                break
    assert ("receive", "decided/x") in ProbeTopicPlugin.calls
    assert ("publish", "decided/x") in ProbeTopicPlugin.calls


async def test_shutdown_closes_plugins_exactly_once(broker: Any) -> None:
    b, _ = broker
    await b.shutdown()
    assert ProbeTopicPlugin.closed == 1
