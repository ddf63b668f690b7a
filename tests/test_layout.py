"""The package layout keeps its promises: dependency direction and import locations."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ["mqchat", "api", "broker", "bridge", "workers", "mobile_sim", "harness", "bench"]
#: What each package may import from the others. The launcher (mqchat/cli.py) starts the processes
#: as child processes (``python -m broker``), so it imports none of them either.
ALLOWED = {
    "mqchat": set(),
    "api": {"mqchat"},
    "broker": {"mqchat"},
    "bridge": {"mqchat"},
    "workers": {"mqchat"},
    "mobile_sim": {"mqchat", "harness"},
    # The system launcher, servers and reference client shared by tests, simulator and benchmarks.
    "harness": {"mqchat"},
    # The push measurement drives the server's own workers; the MQTT benchmarks use the simulator's client.
    "bench": {"mqchat", "harness", "mobile_sim", "workers"},
}
MOBILE_SIM_MAY_USE = {"mqchat", "mqchat.topics", "mqchat.schema", "mqchat.config", "mqchat.mqtt", "mqchat.fold"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_what_they_may(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        for name in imports_of(path):
            top = name.split(".")[0]
            assert top != "tests", f"{path.relative_to(ROOT)} imports the tests: {name}"
            if top in PACKAGES and top != package:
                assert top in ALLOWED[package], f"{path.relative_to(ROOT)} imports {name}"
            if package == "mobile_sim" and top == "mqchat":
                assert any(name == m or (name.startswith(m + ".") and m != "mqchat") for m in MOBILE_SIM_MAY_USE) \
                    or name == "mqchat", f"{path.relative_to(ROOT)} imports server internals: {name}"


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_resolve_to_the_repository_not_the_tests(package: str) -> None:
    module = importlib.import_module(package)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().parent == ROOT / package


#: Server packages whose Redis access must go through :mod:`mqchat.storage` (mobile_sim is an
#: external client; its benchmark harness reads Redis's own counters from outside, like redis-cli).
SERVER_CODE = ["mqchat", "api", "broker", "bridge", "workers"]
STORAGE = ROOT / "mqchat" / "storage"
#: Methods that only code issuing Redis commands calls: pipelines, scripts, the raw client.
REDIS_ONLY_METHODS = {"pipeline", "register_script", "evalsha", "script_load", "execute_command", "driver"}


def redis_command_code(source: str) -> list[str]:
    """What in ``source`` talks to Redis directly: redis-py imports, pipelines, scripts, the raw client."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"import {a.name}" for a in node.names if a.name.split(".")[0] == "redis"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "redis":
            found.append(f"from {node.module} import ...")
        elif isinstance(node, ast.ImportFrom) and node.module and any(a.name == "load_script" for a in node.names):
            found.append(f"from {node.module} import load_script")
        elif isinstance(node, ast.Attribute) and node.attr in REDIS_ONLY_METHODS:
            found.append(f"line {node.lineno}: .{node.attr}")
    return found


def test_the_redis_check_sees_each_kind_of_direct_access() -> None:
    leaky = """
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError
from mqchat.storage.redis_client import load_script
pipe = r.pipeline(transaction=False)
claim = r.register_script(text)
pipe.evalsha(claim.sha, 1, "k")
r = client.driver
"""
    assert len(redis_command_code(leaky)) == 7
    assert redis_command_code("settings.redis.url\nstate.presence_of(['u'])\n") == []


@pytest.mark.parametrize("package", SERVER_CODE)
def test_redis_commands_are_issued_only_in_mqchat_storage(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        if path.is_relative_to(STORAGE):
            continue
        found = redis_command_code(path.read_text())
        assert not found, f"{path.relative_to(ROOT)} talks to Redis directly ({', '.join(found)}); " \
                          "add a method to a store in mqchat/storage/ instead"


@pytest.mark.parametrize("package", [*PACKAGES, "bench", "tests"])
def test_no_module_imports_another_modules_private_names(package: str) -> None:
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__":
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                assert not private, f"{path.relative_to(ROOT)} imports {', '.join(private)} from {node.module}"

