"""Whether a send may go through: permissions, timeouts and slow mode (docs/permissions.md).

The bridge decides each batch of sends with one :meth:`~mqchat.storage.base.ServerDirectory.channel_access`
round trip (:func:`channel_access`), one pure decision per draft (:func:`decide`), and, for the drafts a
channel's slow mode applies to, one round trip to a :class:`SlowModeGate` that claims the sender's
slot atomically. Refusals become error acks with the codes of docs/protocol.md.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from mqchat.permissions import DIRECT_MEMBER, Permission
from mqchat.storage.base import ChannelAccess, Directory, SlowModeClaim, SlowModeGate

NOT_MEMBER = "not_member"
FORBIDDEN = "forbidden"
TIMED_OUT = "timed_out"
SLOW_MODE = "slow_mode"

#: Holders of any of these are not held back by slow mode (as in Discord).
SLOW_MODE_EXEMPT = Permission.MANAGE_MESSAGES | Permission.MANAGE_CHANNELS


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a send is refused: an error ack's ``code``, ``message`` and, for waits, ``retry_after_ms``."""

    code: str
    message: str
    retry_after_ms: int | None = None


def decide(access: ChannelAccess, now_ms: int) -> Refusal | int:
    """The verdict on one send, from the sender's access to the channel at ``now_ms``.

    Returns a :class:`Refusal`, or the slow-mode interval (ms) the send must still respect (0: none).
    Order: cannot view (``not_member``, as for a channel one is not in), cannot send (``forbidden``),
    timed out (``timed_out``), then slow mode, from which ``manage_messages`` and ``manage_channels``
    holders are exempt.
    """
    if Permission.VIEW_CHANNEL not in access.perms:
        return Refusal(NOT_MEMBER, "you are not a member of this channel")
    if Permission.SEND_MESSAGES not in access.perms:
        return Refusal(FORBIDDEN, "missing permission send_messages in this channel")
    if access.timeout_until_ms is not None and access.timeout_until_ms > now_ms:
        return Refusal(TIMED_OUT, "you are timed out in this server", access.timeout_until_ms - now_ms)
    if access.slow_mode_s > 0 and not access.perms & SLOW_MODE_EXEMPT:
        return access.slow_mode_s * 1000
    return 0


def slow_mode_refusal(retry_after_ms: int) -> Refusal:
    return Refusal(SLOW_MODE, "slow mode: wait before sending again in this channel", max(1, retry_after_ms))


async def channel_access(directory: Directory,
                         pairs: Collection[tuple[str, str]]) -> dict[tuple[str, str], ChannelAccess]:
    """Access for each ``(channel, user)`` in one round trip. A directory without servers (only direct
    and group channels) answers from its memberships."""
    batched = getattr(directory, "channel_access", None)
    if batched is not None:
        result: dict[tuple[str, str], ChannelAccess] = await batched(pairs)
        return result
    members = await directory.memberships(pairs)
    return {p: ChannelAccess(perms=DIRECT_MEMBER) if p in members else ChannelAccess() for p in pairs}


class MemorySlowMode:
    """A :class:`SlowModeGate` in this process (one bridge without Redis)."""

    def __init__(self, *, max_entries: int = 100_000) -> None:
        self._slots: dict[tuple[str, str], tuple[int, str]] = {}  # (channel, user) → (free at ms, cmid)
        self._max_entries = max_entries

    async def claim_slow_mode(self, claims: Sequence[SlowModeClaim], *, now_ms: int) -> list[int]:
        out = []
        for c in claims:
            held = self._slots.get((c.channel, c.user))
            if held is not None and held[0] > now_ms and held[1] != c.cmid:
                out.append(held[0] - now_ms)
                continue
            if held is None or held[0] <= now_ms:
                self._slots[(c.channel, c.user)] = (now_ms + c.interval_ms, c.cmid)
            out.append(0)
        if len(self._slots) > self._max_entries:
            self._slots = {k: v for k, v in self._slots.items() if v[0] > now_ms}
        return out


def _conformance(gate: MemorySlowMode) -> SlowModeGate:
    return gate
