"""The README's paho-mqtt client again, with Mosquitto as the broker.

The message path, read state and resume suites run on Mosquitto as their ``[production]`` variants
(Mosquitto, two bridges, two workers instances, a Redis Cluster: docs/testing.md), which replaced
their single-bridge Mosquitto copies here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Mosquitto, System, free_port
from tests.e2e.test_readme_client import test_paho_client_logs_in_joins_sends_and_receives

pytestmark = pytest.mark.e2e

__all__ = ["test_paho_client_logs_in_joins_sends_and_receives"]


@pytest.fixture
def system(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[System]:
    """The whole system, with Mosquitto in place of the embedded broker."""
    s = System(tmp_path / "data", mosquitto.port, free_port(), free_port(), log=tmp_path / "up.log",
               broker=f"127.0.0.1:{mosquitto.port}")
    s.start()
    yield s
    s.kill()
