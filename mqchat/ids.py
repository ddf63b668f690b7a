"""Id grammar and Snowflake message ids. Pure: no clock is read here unless the caller asks.

User, device and channel ids are strings of 1-64 characters from ``[A-Za-z0-9_-]`` (the contract).
Message ids are 63-bit Snowflakes::

     41 bits: milliseconds since EPOCH_MS | 10 bits: worker id | 12 bits: sequence within the ms

:class:`Snowflake` stays strictly monotonic when the wall clock steps backwards: it keeps issuing
from the last timestamp it used (borrowing the next millisecond when a millisecond's 4,096 ids are
spent) until the clock catches up, so ids never repeat or go back.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import NewType

from mqchat.errors import InvalidId

ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")

UserId = NewType("UserId", str)
DeviceId = NewType("DeviceId", str)
ChannelId = NewType("ChannelId", str)

EPOCH_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
WORKER_BITS = 10
SEQUENCE_BITS = 12
MAX_WORKER = (1 << WORKER_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
MAX_TIMESTAMP = (1 << 41) - 1


def is_valid_id(value: object) -> bool:
    """True when ``value`` is a string following the id grammar."""
    return isinstance(value, str) and ID_RE.fullmatch(value) is not None


def check_id(kind: str, value: object) -> str:
    """Return ``value`` if it follows the id grammar.

    Raises:
        InvalidId: otherwise.
    """
    if not is_valid_id(value):
        raise InvalidId(kind, value)
    assert isinstance(value, str)
    return value


def user_id(value: object) -> UserId:
    return UserId(check_id("user", value))


def device_id(value: object) -> DeviceId:
    return DeviceId(check_id("device", value))


def channel_id(value: object) -> ChannelId:
    return ChannelId(check_id("channel", value))


def new_random_id(prefix: str) -> str:
    """A server-made id: ``prefix`` plus 16 random URL-safe characters (96 bits)."""
    return check_id("generated", prefix + secrets.token_urlsafe(12))


@dataclass(frozen=True, slots=True)
class SnowflakeParts:
    timestamp_ms: int
    worker_id: int
    sequence: int


def compose(timestamp_ms: int, worker_id: int, sequence: int) -> int:
    """Pack the three fields into a Snowflake id.

    Raises:
        ValueError: a field is out of range (timestamp before EPOCH_MS, worker > 1023, ...).
    """
    since = timestamp_ms - EPOCH_MS
    if not 0 <= since <= MAX_TIMESTAMP:
        raise ValueError(f"timestamp {timestamp_ms} outside the Snowflake range")
    if not 0 <= worker_id <= MAX_WORKER:
        raise ValueError(f"worker id {worker_id} outside 0..{MAX_WORKER}")
    if not 0 <= sequence <= MAX_SEQUENCE:
        raise ValueError(f"sequence {sequence} outside 0..{MAX_SEQUENCE}")
    return (since << (WORKER_BITS + SEQUENCE_BITS)) | (worker_id << SEQUENCE_BITS) | sequence


def parse(snowflake: int) -> SnowflakeParts:
    """Inverse of :func:`compose`."""
    return SnowflakeParts(
        timestamp_ms=(snowflake >> (WORKER_BITS + SEQUENCE_BITS)) + EPOCH_MS,
        worker_id=(snowflake >> SEQUENCE_BITS) & MAX_WORKER,
        sequence=snowflake & MAX_SEQUENCE,
    )


class Snowflake:
    """Generator of strictly increasing Snowflake ids for one worker.

    Args:
        worker_id: 0..1023, unique among the processes that generate ids at the same time.
    """

    def __init__(self, worker_id: int) -> None:
        if not 0 <= worker_id <= MAX_WORKER:
            raise ValueError(f"worker id {worker_id} outside 0..{MAX_WORKER}")
        self.worker_id = worker_id
        self._last_ms = 0
        self._sequence = 0

    def next_id(self, now_ms: int) -> int:
        """The next id, given the wall clock ``now_ms``; never smaller than any id issued before."""
        if now_ms > self._last_ms:
            self._last_ms = now_ms
            self._sequence = 0
        elif self._sequence < MAX_SEQUENCE:
            # Same millisecond, or the clock went back: keep counting on the last timestamp.
            self._sequence += 1
        else:
            # This millisecond is spent: borrow the next one.
            self._last_ms += 1
            self._sequence = 0
        return compose(self._last_ms, self.worker_id, self._sequence)

    def __call__(self) -> int:
        return self.next_id(time.time_ns() // 1_000_000)
