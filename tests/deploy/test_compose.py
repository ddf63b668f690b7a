"""deploy/compose: the staging topology parses, references only files that exist, wires the
processes the way they need (coordinated bridges, one workers, hooks off the load balancer), and
every mqchat container's environment loads as valid settings. Offline: no Docker engine here, so
nothing is started; `docker compose config` is the check left to a machine with Docker."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from mqchat.config import Settings, load_settings
from tests.deploy.support import (
    COMPOSE,
    DEPLOY,
    api_paths,
    compose,
    ops_paths,
    read_env_file,
    serves_ops_port,
    yaml_docs,
)

HERE = COMPOSE.parent
TEST_SECRET = "x" * 48
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?::?[?-][^}]*)?\}")


def services() -> dict[str, dict[str, Any]]:
    s: dict[str, dict[str, Any]] = compose()["services"]
    return s


def mqchat_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if str(s.get("image", "")).startswith("mqchat:")}


def process_of(service: dict[str, Any]) -> str:
    command = service["command"]
    assert command[:2] == ["python", "-m"], command
    return str(command[2])


def service_env(service: dict[str, Any]) -> dict[str, str]:
    """The environment Compose gives a container: its env files, then `environment`, with the
    ${VAR:?...} secrets interpolated to a test value."""
    env: dict[str, str] = {}
    for entry in service.get("env_file", []):
        path = HERE / (entry["path"] if isinstance(entry, dict) else entry)
        if path.exists():
            env.update(read_env_file(path))
    for key, value in (service.get("environment") or {}).items():
        env[key] = INTERPOLATION.sub(lambda _: TEST_SECRET, str(value))
    return env


def load_with_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Settings:
    for key in list(os.environ):
        if key.startswith("MQCHAT_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


def test_topology_has_every_component() -> None:
    s = services()
    emqx = [n for n, svc in s.items() if str(svc.get("image", "")).startswith("emqx/emqx:")]
    assert len(emqx) == 3
    processes = [process_of(svc) for svc in mqchat_services().values()]
    assert processes.count("bridge") >= 2
    assert processes.count("workers") == 1  # the presence publisher is a single ordered consumer
    assert processes.count("api") == 3      # 2 public replicas + the broker hooks service
    assert s["redis"]["image"].startswith("redis:")
    assert s["lb"]["image"].startswith("haproxy:")


def test_cassandra_is_included_not_copied() -> None:
    included = [(HERE / path).resolve() for path in compose()["include"]]
    assert included == [DEPLOY / "cassandra" / "docker-compose.yml"]
    assert all(p.exists() for p in included)
    cassandra_services = set(yaml_docs(included[0])[0]["services"])
    assert not cassandra_services & set(services()), "services defined twice"
    for service in mqchat_services().values():
        assert service["depends_on"]["schema"]["condition"] == "service_completed_successfully"


def test_referenced_files_exist() -> None:
    for name, service in services().items():
        for entry in service.get("env_file", []):
            if isinstance(entry, dict) and entry.get("required") is False:
                continue
            path = HERE / (entry["path"] if isinstance(entry, dict) else entry)
            assert path.is_file(), f"{name}: env file {path} missing"
        for volume in service.get("volumes", []):
            if isinstance(volume, str) and volume.startswith("."):
                source = HERE / volume.split(":")[0]
                assert source.exists(), f"{name}: bind mount {source} missing"
        build = service.get("build")
        if build:
            context = (HERE / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file()
            assert (context / "pyproject.toml").is_file()


def test_only_the_load_balancer_publishes_ports() -> None:
    published = {name for name, s in services().items() if s.get("ports")}
    assert published == {"lb"}


def test_healthchecks_use_served_readiness_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    api = api_paths()
    ops = ops_paths()
    for name, service in mqchat_services().items():
        test = " ".join(service["healthcheck"]["test"])
        settings = load_with_env(monkeypatch, service_env(service))
        process = process_of(service)
        url = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*?)'", test)
        if process == "api":
            assert url is not None, name
            assert int(url.group(1)) == settings.http.port
            assert url.group(2) == "/readyz"
            assert "/readyz" in api
        elif process == "bridge":
            assert url is not None, name
            assert serves_ops_port("bridge")
            assert int(url.group(1)) == settings.ops.bridge_port != 0
            assert url.group(2) == "/readyz"
            assert "/readyz" in ops
        else:
            assert process == "workers"
            assert url is not None, name
            assert serves_ops_port("workers")
            assert int(url.group(1)) == settings.ops.workers_port != 0
            assert url.group(2) == "/readyz"


def test_every_mqchat_container_gets_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    worker_ids = []
    for name, service in mqchat_services().items():
        settings = load_with_env(monkeypatch, service_env(service))
        assert settings.store.backend == "cassandra", name
        assert settings.redis.url, name
        assert settings.auth.secret is not None, name  # one secret for every process
        assert settings.http.host == "0.0.0.0"
        assert settings.ops.host == "0.0.0.0"
        assert set(settings.cassandra.hosts) <= set(services()) | {"cassandra-1", "cassandra-2", "cassandra-3"}
        assert settings.mqtt.host == "lb"
        if process_of(service) == "bridge":
            assert settings.bridge.coordinate
            worker_ids.append(settings.bridge.worker_id)
    assert len(worker_ids) == len(set(worker_ids)), "bridge worker ids must be unique"


def test_secrets_are_required_not_defaulted() -> None:
    example = read_env_file(HERE / "mqchat.env.example")
    assert "MQCHAT_AUTH__SECRET" not in example
    for service in mqchat_services().values():
        assert ":?" in service["environment"]["MQCHAT_AUTH__SECRET"]


def test_load_balancer_routes_to_services_and_hides_the_hooks() -> None:
    cfg = (HERE / "haproxy.cfg").read_text()
    targets = set(re.findall(r"^\s*server \S+ ([\w-]+):\d+", cfg, flags=re.M))
    assert targets, "no backends"
    assert targets <= set(services())
    assert "mqchat-hooks" not in targets
    assert re.search(r"http-request deny .*path_beg /hooks", cfg)
    api_backends = set(re.findall(r"^\s*server \S+ (api-\d+):8080", cfg, flags=re.M))
    assert api_backends == {n for n, s in mqchat_services().items() if n.startswith("api-")}
    assert "GET /readyz" in cfg
