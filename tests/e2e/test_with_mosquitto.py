"""The message path, read state and resume suites again, with Mosquitto as the broker.

`mqchat up --broker` runs the bridge, API and workers unchanged against a real Mosquitto. The tests
that check the broker's own enforcement (refused subscriptions, forged topics, membership checked
on delivery, presence leases) stay with the embedded broker: Mosquitto here runs without an auth
plugin, which is exactly why production brokers call our hooks (tests/e2e/test_hooks_parity.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Mosquitto, System, free_port
from tests.e2e.test_message_path import (
    test_bad_payload_gets_error_ack_and_bridge_keeps_running,
    test_group_of_four_devices_exchanges_1000_messages_in_one_order,
    test_non_member_send_gets_not_member_and_nothing_is_stored,
    test_retried_cmid_is_stored_once_and_acked_with_the_same_seq,
)
from tests.e2e.test_read_sync import (
    test_device_offline_during_5000_messages_resumes_with_one_sync_call,
    test_read_marker_reaches_the_other_device_and_badge_matches_the_formula,
)
from tests.e2e.test_readme_client import test_paho_client_logs_in_joins_sends_and_receives

pytestmark = pytest.mark.e2e

__all__ = [
    "test_bad_payload_gets_error_ack_and_bridge_keeps_running",
    "test_device_offline_during_5000_messages_resumes_with_one_sync_call",
    "test_group_of_four_devices_exchanges_1000_messages_in_one_order",
    "test_non_member_send_gets_not_member_and_nothing_is_stored",
    "test_paho_client_logs_in_joins_sends_and_receives",
    "test_read_marker_reaches_the_other_device_and_badge_matches_the_formula",
    "test_retried_cmid_is_stored_once_and_acked_with_the_same_seq",
]


@pytest.fixture
def system(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[System]:
    """The whole system, with Mosquitto in place of the embedded broker."""
    s = System(tmp_path / "data", mosquitto.port, free_port(), free_port(), log=tmp_path / "up.log",
               broker=f"127.0.0.1:{mosquitto.port}")
    s.start()
    yield s
    s.kill()
