from __future__ import annotations

from pathlib import Path

import pytest

from mqchat.config import load_settings
from mqchat.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("MQCHAT_"):
            monkeypatch.delenv(key)


def test_defaults() -> None:
    s = load_settings()
    assert (s.mqtt.port, s.mqtt.ws_port, s.http.port) == (1883, 8083, 8080)
    assert s.auth.algorithms == ("HS256",)


def test_sources_in_priority_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "mqchat.toml"
    cfg.write_text("[mqtt]\nport = 2000\nws_port = 2001\n[http]\nport = 2002\n")
    monkeypatch.setenv("MQCHAT_MQTT__PORT", "3000")
    s = load_settings(cfg, http={"port": 4000})
    assert (s.mqtt.port, s.mqtt.ws_port, s.http.port) == (3000, 2001, 4000)


@pytest.mark.parametrize(("env", "value", "fragment"), [
    ("MQCHAT_MQTT__PORT", "70000", "mqtt.port"),
    ("MQCHAT_MQTT__PORT", "abc", "mqtt.port"),
    ("MQCHAT_AUTH__SECRET", "short", "at least 32 bytes"),
    ("MQCHAT_AUTH__ALGORITHMS", '["RS256"]', "public_key_file"),
    ("MQCHAT_BRIDGE__WORKER_ID", "5000", "bridge.worker_id"),
    ("MQCHAT_LOG_LEVEL", "LOUD", "log_level"),
])
def test_invalid_values_are_named(monkeypatch: pytest.MonkeyPatch, env: str, value: str, fragment: str) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError, match=fragment):
        load_settings()


def test_unknown_keys_in_a_file_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "mqchat.toml"
    cfg.write_text("[mqtt]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"mqtt\.prot"):
        load_settings(cfg)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        s.mqtt.port = 1  # type: ignore[misc]


def test_configuration_reference_is_current() -> None:
    from mqchat.config import reference_markdown
    from tests.conftest import ROOT

    assert (ROOT / "docs" / "configuration.md").read_text() == reference_markdown(), \
        "docs/configuration.md is stale: run `mqchat config --markdown > docs/configuration.md`"


def test_the_broker_and_tokens_are_bounded_by_default() -> None:
    # issue #17: no connection limit, no per-user cap, sessions kept forever, week-long tokens
    s = load_settings()
    assert 0 < s.broker.max_connections <= 1_000_000
    assert 0 < s.broker.max_connections_per_user <= 100
    assert 0 < s.broker.session_expiry_s <= 30 * 86_400
    assert s.broker.retained_max_count > 0
    assert s.broker.retained_max_bytes > 0
    assert s.auth.token_ttl_s <= 3600
