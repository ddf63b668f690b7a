"""Every MQCHAT_* variable named anywhere in deploy/ is a real setting (names generated from the
settings model, as docs/configuration.md is), so a typo cannot silently fall back to a default."""

from __future__ import annotations

from tests.deploy.support import DEPLOY, ENV_NAME, valid_env_names


def test_valid_names_come_from_the_model() -> None:
    names = valid_env_names()
    assert {"MQCHAT_BRIDGE__WORKER_ID", "MQCHAT_REDIS__URL", "MQCHAT_CASSANDRA__HOSTS", "MQCHAT_AUTH__SECRET",
            "MQCHAT_OPS__BRIDGE_PORT", "MQCHAT_DATA_DIR"} <= names
    assert "MQCHAT_BRIDGE" not in names
    assert "MQCHAT_BRIDGE__WORKERID" not in names


def test_the_reference_documents_the_same_names() -> None:
    reference = (DEPLOY.parent / "docs" / "configuration.md").read_text()
    documented = {n for n in ENV_NAME.findall(reference) if not n.endswith("__*")}
    assert documented - {"MQCHAT_CONFIG"} == valid_env_names() - {"MQCHAT_CONFIG"}


def test_every_variable_used_in_deploy_is_a_setting() -> None:
    valid = valid_env_names()
    used: dict[str, set[str]] = {}
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.suffix not in (".pyc",):
            for name in ENV_NAME.findall(path.read_text(errors="replace")):
                used.setdefault(name, set()).add(str(path.relative_to(DEPLOY)))
    assert len(used) > 20  # the scan sees the env files, compose and manifests
    def known(name: str) -> bool:
        if name.endswith("__*"):  # a section: some setting must live under it
            return any(v.startswith(name[:-1]) for v in valid)
        return name in valid

    unknown = {name: sorted(where) for name, where in used.items() if not known(name)}
    assert not unknown, f"not settings: {unknown}"
