"""CONNECT refusals by the broker's JWT plugin, against a running system."""

from __future__ import annotations

import time

import aiomqtt
import pytest

from mqchat import auth, topics
from mqchat.config import load_settings
from tests.conftest import System
from tests.e2e.conftest import World

pytestmark = pytest.mark.e2e


def keys_of(system: System) -> auth.KeySet:
    return auth.load_keys(load_settings(data_dir=system.data_dir))


async def connect(system: System, *, client_id: str, username: str, password: str,
                  will: aiomqtt.Will | None = None) -> None:
    async with aiomqtt.Client("127.0.0.1", system.mqtt_port, identifier=client_id, username=username,
                              password=password, will=will, timeout=5):
        pass


async def test_valid_identity_connects(system: System, world: World) -> None:
    s = world.alice_phone
    await connect(system, client_id=f"{s.user_id}:{s.device_id}", username=s.user_id, password=s.token)


@pytest.mark.parametrize("case", ["wrong_client_id", "other_users_client_id", "wrong_username", "expired",
                                  "bad_signature", "no_password", "will_on_foreign_topic"])
async def test_refused_connects(system: System, world: World, case: str) -> None:
    s = world.alice_phone
    cid, user, token, will = f"{s.user_id}:{s.device_id}", s.user_id, s.token, None
    now = int(time.time())
    if case == "wrong_client_id":
        cid = f"{s.user_id}:tablet"
    elif case == "other_users_client_id":
        cid = f"{world.bob}:phone"  # session takeover across users
    elif case == "wrong_username":
        user = world.bob
    elif case == "expired":
        token = auth.issue(keys_of(system), user_id=s.user_id, device_id=s.device_id, now=now - 7200, ttl_s=60)
    elif case == "bad_signature":
        other = auth.KeySet("y" * 48, "y" * 48, ("HS256",), "mqchat", "mqchat", 3600, 30)
        token = auth.issue(other, user_id=s.user_id, device_id=s.device_id, now=now)
    elif case == "no_password":
        token = ""
    elif case == "will_on_foreign_topic":
        will = aiomqtt.Will(topics.stream(world.channel), b'{"fake": true}')
    with pytest.raises(aiomqtt.MqttCodeError) as info:
        await connect(system, client_id=cid, username=user, password=token, will=will)
    rc = info.value.rc
    # CONNACK 0x05 "not authorized"; paho reports it as the equivalent MQTT 5 code 0x87.
    assert rc is not None
    assert (rc if isinstance(rc, int) else rc.value) in (0x05, 0x87)


async def test_will_on_own_presence_topic_is_accepted(system: System, world: World) -> None:
    s = world.alice_phone
    will = aiomqtt.Will(topics.device_presence(s.user_id, s.device_id), b'{"status": "offline", "ts": 0}',
                        retain=True)
    await connect(system, client_id=f"{s.user_id}:{s.device_id}", username=s.user_id, password=s.token, will=will)
