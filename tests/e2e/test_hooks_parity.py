"""The HTTP hooks for external brokers and the embedded broker's plugins give the same answers."""

from __future__ import annotations

import httpx
import pytest

from harness.client import Device
from mqchat import topics
from tests.conftest import System
from tests.e2e.conftest import World

pytestmark = pytest.mark.e2e
HOOKS_SECRET = "e2e-hooks-secret-0123456789"


@pytest.fixture
def system(system_factory) -> System:  # type: ignore[no-untyped-def]
    """The system with its broker hooks on (they are off without a secret)."""
    s: System = system_factory()
    s.env["MQCHAT_HTTP__HOOKS_SECRET"] = HOOKS_SECRET
    s.start()
    return s


async def test_subscribe_decisions_match_between_amqtt_and_the_emqx_hook(system: System, world: World) -> None:
    other = await world.api.create_channel(world.carol_phone.token, "direct", [world.bob])
    filters = [topics.stream(world.channel), topics.stream(other), "#", "$SYS/#", "ch/+", "in/+/+/+",
               topics.ack(world.alice, "phone"), topics.ack(world.bob, "phone"), topics.user_events(world.alice),
               topics.user_events(world.bob), topics.user_presence(world.bob), topics.user_presence(world.carol),
               topics.typing_filter(world.channel), topics.typing_filter(other), "typing/+/x"]
    async with Device(world.alice_phone) as alice, httpx.AsyncClient(
            base_url=system.api, headers={"Authorization": f"Bearer {HOOKS_SECRET}"}) as http:
        for f in filters:
            suback = await alice.client.subscribe(f, qos=1)
            code = suback[0] if isinstance(suback[0], int) else suback[0].value
            hook = await http.post("/hooks/emqx/authz", json={"clientid": f"{world.alice}:phone",
                                                              "username": world.alice, "topic": f,
                                                              "action": "subscribe"})
            assert (code != 0x80) == (hook.json()["result"] == "allow"), f
