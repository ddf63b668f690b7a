"""The message-path suite (tests/e2e/test_message_path.py) on a system whose directory is a real
PostgreSQL server: ``mqchat up --directory postgresql://...`` (which migrates it on start-up). The
tests are the same functions; only the ``system_factory`` (and so ``system``) fixture differs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import System
from tests.e2e.test_message_path import (
    test_bad_payload_gets_error_ack_and_bridge_keeps_running,
    test_forged_sender_topic_is_dropped_by_the_broker,
    test_group_of_four_devices_exchanges_1000_messages_in_one_order,
    test_membership_change_takes_effect_without_reconnect,
    test_non_member_send_gets_not_member_and_nothing_is_stored,
    test_refused_subscriptions,
    test_retried_cmid_is_stored_once_and_acked_with_the_same_seq,
    test_sigkill_mid_stream_loses_no_acked_message,
    test_websocket_listener_carries_the_same_protocol,
)

pytestmark = pytest.mark.e2e

__all__ = [
    "test_bad_payload_gets_error_ack_and_bridge_keeps_running",
    "test_forged_sender_topic_is_dropped_by_the_broker",
    "test_group_of_four_devices_exchanges_1000_messages_in_one_order",
    "test_membership_change_takes_effect_without_reconnect",
    "test_non_member_send_gets_not_member_and_nothing_is_stored",
    "test_refused_subscriptions",
    "test_retried_cmid_is_stored_once_and_acked_with_the_same_seq",
    "test_sigkill_mid_stream_loses_no_acked_message",
    "test_websocket_listener_carries_the_same_protocol",
]


@pytest.fixture
def system_factory(tmp_path: Path, postgres_dsn: str) -> Iterator[Callable[[], System]]:
    made: list[System] = []

    def make() -> System:
        s = System.on_free_ports(tmp_path, env={"MQCHAT_DIRECTORY__URL": postgres_dsn})
        made.append(s)
        return s

    yield make
    for s in made:
        s.kill()


def test_the_directory_is_postgresql(system: System, postgres_dsn: str) -> None:
    """The system under test really keeps its directory in PostgreSQL: no SQLite directory file."""
    assert system.env["MQCHAT_DIRECTORY__URL"] == postgres_dsn
    assert not (system.data_dir / "directory.db").exists()
