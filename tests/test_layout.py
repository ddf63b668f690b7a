"""The package layout keeps its promises: dependency direction and import locations."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGES = ["mqchat", "api", "broker", "bridge", "workers", "mobile_sim", "harness", "bench"]
#: What each package may import from the others. The launcher (mqchat/cli.py) starts processes
#: and is the one exception in the shared package.
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
MOBILE_SIM_MAY_USE = {"mqchat", "mqchat.topics", "mqchat.schema", "mqchat.config"}


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
        if path == ROOT / "mqchat" / "cli.py":
            continue
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
