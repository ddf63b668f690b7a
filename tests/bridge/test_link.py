"""The bridge's broker link (bridge/link.py): either client turns a failed connect into a link error
(what the bridge reconnects on), and the setting refuses other clients."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.link import LINK_ERRORS, open_link
from harness.ports import free_port
from mqchat.config import load_settings
from mqchat.errors import ConfigError
from mqchat.mqtt.client import ConnectionLost


@pytest.mark.parametrize("client", ["lean", "aiomqtt"])
async def test_nothing_listening_is_a_link_error(tmp_path: Path, client: str) -> None:
    settings = load_settings(data_dir=tmp_path, mqtt={"host": "127.0.0.1", "port": free_port()},
                             bridge={"mqtt_client": client})
    with pytest.raises(LINK_ERRORS) as caught:
        async with open_link(settings, ("b0", "svc-bridge", "secret"), 100):
            pass
    if client == "lean":
        assert isinstance(caught.value, ConnectionLost)
        assert "cannot connect to 127.0.0.1" in str(caught.value)


def test_the_setting_names_a_known_client(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"bridge\.mqtt_client: Input should be 'lean' or 'aiomqtt'"):
        load_settings(data_dir=tmp_path, bridge={"mqtt_client": "paho"})
