"""Unread counts, derived from sequence numbers so they cannot drift. Pure.

Only events that carry new content count (``schema.COUNTING_KINDS``: texts, thread replies
included); edits, deletes, reactions and pins do not. Each event stores ``count_seq``, a second
gap-free counter over the counting events of its epoch, and a position knows the last one
(``Position.count``). So

``unread = position.count - count_seq of the event at the user's read seq``

which stays O(1) per channel (one lookup of the event at the read seq, batched by
``MessageStore.counts_at``). Own messages never count: the bridge moves the sender's read marker
to each counting message it sends. A marker from another epoch counts as no marker (the channel's
sequence was reset).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from mqchat.storage.base import Position, ReadMarker

#: ``count_seq`` of the event at ``(channel, seq)``, as ``MessageStore.counts_at`` answers.
Counts = Mapping[tuple[str, int], int]


def read_seq(position: Position, marker: ReadMarker | None) -> int:
    """The seq the user has read up to in the channel's current epoch."""
    if marker is None or marker.epoch != position.epoch:
        return 0
    return min(marker.seq, position.last_seq)


def points(positions: Mapping[str, Position], markers: Mapping[str, ReadMarker | None]) -> set[tuple[str, int]]:
    """The ``(channel, read seq)`` points whose ``count_seq`` :func:`unread` needs (seq 0 needs none)."""
    found = {(c, read_seq(pos, markers.get(c))) for c, pos in positions.items()}
    return {p for p in found if p[1] > 0}


def unread(channel: str, position: Position, marker: ReadMarker | None, counts: Counts) -> int:
    seq = read_seq(position, marker)
    return max(0, position.count - (counts[(channel, seq)] if seq > 0 else 0))


def badge(positions: Mapping[str, Position], markers: Mapping[str, ReadMarker | None], counts: Counts) -> int:
    """Total unread over the user's channels: the number a push notification's badge shows."""
    return sum(unread(channel, pos, markers.get(channel), counts) for channel, pos in positions.items())


def all_points(users_positions: Collection[tuple[Mapping[str, Position], Mapping[str, ReadMarker | None]]],
               ) -> set[tuple[str, int]]:
    """:func:`points` over several users (one ``counts_at`` call for all of them)."""
    found: set[tuple[str, int]] = set()
    for positions, markers in users_positions:
        found |= points(positions, markers)
    return found
