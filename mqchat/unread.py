"""Unread counts, derived from sequence numbers so they cannot drift. Pure.

``unread = channel's last seq - the user's read seq``. Own messages never count: the bridge moves
the sender's read marker to each message it sends. A marker from another epoch counts as no
marker (the channel's sequence was reset).
"""

from __future__ import annotations

from collections.abc import Mapping

from mqchat.storage.base import Position, ReadMarker


def read_seq(position: Position, marker: ReadMarker | None) -> int:
    """The seq the user has read up to in the channel's current epoch."""
    if marker is None or marker.epoch != position.epoch:
        return 0
    return min(marker.seq, position.last_seq)


def unread(position: Position, marker: ReadMarker | None) -> int:
    return position.last_seq - read_seq(position, marker)


def badge(positions: Mapping[str, Position], markers: Mapping[str, ReadMarker | None]) -> int:
    """Total unread over the user's channels: the number a push notification's badge shows."""
    return sum(unread(pos, markers.get(channel)) for channel, pos in positions.items())
