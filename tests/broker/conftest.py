"""Fixtures for the broker hardening suites: brokers under test in their own processes."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.broker import launch
from tests.broker.launch import BrokerProcess, Engine


class StartBroker(Protocol):
    def __call__(self, engine: Engine, *, auth: bool = False, env: dict[str, str] | None = None,
                 plugins: dict[str, Any] | None = None) -> BrokerProcess: ...


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture(scope="module")
def shared_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[Engine], BrokerProcess]]:
    """One bare (no-auth) broker per engine for a whole module, started on first use: for tests
    that leave nothing behind that another could see (unique client ids and topics)."""
    brokers: dict[Engine, BrokerProcess] = {}

    def get(engine: Engine) -> BrokerProcess:
        if engine not in brokers or not brokers[engine].alive():
            brokers[engine] = launch.start_broker(engine, tmp_path_factory.mktemp(f"shared-{engine}"))
        return brokers[engine]

    yield get
    for broker in brokers.values():
        broker.kill()


@pytest.fixture
def start_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StartBroker]:
    """Start brokers for one test; all are killed afterwards (their logs are printed if it failed)."""
    started: list[BrokerProcess] = []

    def start(engine: Engine, *, auth: bool = False, env: dict[str, str] | None = None,
              plugins: dict[str, Any] | None = None) -> BrokerProcess:
        broker = launch.start_broker(engine, tmp_path / f"{engine}-{len(started)}", auth=auth, env=env, plugins=plugins)
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.kill()
    if request.node.stash.get(_FAILED, False):
        for broker in started:
            print(f"--- {broker.engine} broker log ({broker.log}) ---\n{broker.log_tail()}")
