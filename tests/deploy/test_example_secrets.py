"""A deployment that copies deploy/'s example secrets as they are does not start (they are public)."""

from __future__ import annotations

import re

import pytest

from mqchat.config import load_settings
from mqchat.errors import ConfigError
from tests.deploy.support import DEPLOY

#: `MQCHAT_X__Y=value` (env files) or `MQCHAT_X__Y: value` (manifests) for secret-like settings.
ASSIGNMENT = re.compile(r"^\s*(MQCHAT_(?:AUTH__SECRET|AUTH__SERVICE_TOKEN|HTTP__HOOKS_SECRET|HTTP__METRICS_TOKEN))"
                        r"\s*[=:]\s*['\"]?([^'\"\s$]+)['\"]?\s*$", re.M)


def example_secrets() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and ("example" in path.name or path.suffix in (".yaml", ".yml", ".env")):
            for name, value in ASSIGNMENT.findall(path.read_text(errors="replace")):
                found.append((str(path.relative_to(DEPLOY)), name, value))
    return found


def test_the_examples_carry_secrets_to_check() -> None:
    names = {name for _, name, _ in example_secrets()}
    assert {"MQCHAT_AUTH__SECRET", "MQCHAT_HTTP__HOOKS_SECRET"} <= names


@pytest.mark.parametrize(("where", "name", "value"), example_secrets())
def test_an_example_secret_is_refused_at_start(where: str, name: str, value: str, tmp_path,  # type: ignore[no-untyped-def]
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match="example value from the documentation"):
        load_settings(data_dir=tmp_path)


def test_a_random_secret_is_accepted(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    import secrets

    monkeypatch.setenv("MQCHAT_AUTH__SECRET", secrets.token_urlsafe(48))
    monkeypatch.setenv("MQCHAT_HTTP__HOOKS_SECRET", secrets.token_hex(24))
    assert load_settings(data_dir=tmp_path).http.hooks_secret is not None
