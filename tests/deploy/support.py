"""Shared helpers of the deploy/ checks: file loading, the valid MQCHAT_* names, the served paths."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from pydantic import BaseModel

from mqchat.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
K8S = DEPLOY / "k8s"
BROKERS = DEPLOY / "brokers"

#: An MQCHAT_ variable name as it appears in any text (env files, YAML, shell, comments), or a
#: whole section written as ``MQCHAT_SECTION__*``.
ENV_NAME = re.compile(r"\bMQCHAT_[A-Z0-9_]*[A-Z0-9](?:__\*)?")


def valid_env_names() -> set[str]:
    """Every environment variable the settings model reads, walked like ``reference_markdown``."""
    names = {"MQCHAT_CONFIG"}  # the TOML file (mqchat.config.load_settings)

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}__")
                continue
            names.add(f"MQCHAT_{prefix}{name}".upper())

    walk(Settings, "")
    return names


def yaml_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def deploy_yaml_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yml", ".yaml"))


def k8s_docs() -> list[dict[str, Any]]:
    """Every manifest of deploy/k8s (the Cassandra ones are checked in tests/cassandra)."""
    return [doc for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"
            for doc in yaml_docs(path)]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return loaded


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (Compose env_file syntax without quotes or interpolation)."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            env[key.strip()] = value
    return env


def api_paths() -> dict[str, set[str]]:
    """Path → HTTP methods served by ``python -m api`` (the real application, not started)."""
    from api.app import create_app
    from mqchat.storage.redis_client import RedisClient

    unused: Any = None
    never_connected = RedisClient.from_url("redis://127.0.0.1:1/0")  # connects on first command only
    app = create_app(Settings(), unused, unused, unused, never_connected, unused)
    served: dict[str, set[str]] = {}
    for path, ops in app.openapi()["paths"].items():
        served.setdefault(path, set()).update(m.upper() for m in ops)
    for route in app.routes:
        path = getattr(route, "path", None)
        if isinstance(path, str):
            served.setdefault(path, set()).update(getattr(route, "methods", None) or {"GET"})
    return served


def ops_paths() -> set[str]:
    """Paths of the operations endpoints that the bridge, broker (and workers) serve."""
    from mqchat.ops import ops_app

    return {route.path for route in ops_app(lambda: True).routes if hasattr(route, "path")}


def serves_ops_port(process: str) -> bool:
    """Whether ``python -m <process>`` starts the operations server on ``ops.<process>_port``."""
    return f"settings.ops.{process}_port" in (ROOT / process / "app.py").read_text()


def walk_strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from walk_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk_strings(item)
