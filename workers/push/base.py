"""The pusher interface: one notification to one device, and what can come of it.

::

    PushError
     ├── TemporaryPushError(retry_after)   429, 5xx, connection errors, timeouts: retry with backoff
     └── PermanentPushError                the request itself is wrong (400/401/403...): dead-letter

A pusher *returns* :class:`PushResult` for the two outcomes the caller acts on without retrying
(delivered; the token is dead and must be removed) and *raises* for the two failure classes.
Provider knowledge (which codes mean what) stays in each pusher's module-level tables.
"""

from __future__ import annotations

import abc
import enum
from dataclasses import dataclass

from mqchat.storage.push_state import Platform, PushRegistration, SendJob


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"
    TOKEN_DEAD = "token_dead"


@dataclass(frozen=True, slots=True)
class PushResult:
    """What became of one push that the provider answered."""

    outcome: Outcome
    detail: str = ""
    """The provider's reason (e.g. ``Unregistered``) or message id."""


DELIVERED = PushResult(Outcome.DELIVERED)


class PushError(Exception):
    """A push the provider did not accept. ``reason`` is the provider's code or our description."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class TemporaryPushError(PushError):
    """Worth retrying later: rate limited, provider unavailable, connection failed or timed out.

    Args:
        reason: provider code or description.
        retry_after: seconds the provider asked us to wait (``Retry-After``), if it said.
    """

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentPushError(PushError):
    """Retrying the same request cannot succeed (malformed, unauthorized, too large)."""


@dataclass(frozen=True, slots=True)
class Notification:
    """What a pusher sends: the job, the device's registration, and the rendered text."""

    job: SendJob
    device: PushRegistration
    title: str
    text: str | None
    """None: privacy mode, no message text leaves the server."""

    @property
    def collapse_key(self) -> str:
        """One visible notification per channel: a newer push replaces the older one."""
        return self.job.channel


class Pusher(abc.ABC):
    """Sends notifications for one platform. Implementations bound their own concurrency and put a
    timeout on every request."""

    platform: Platform

    @abc.abstractmethod
    async def send(self, notification: Notification) -> PushResult:
        """Send one notification.

        Returns:
            ``DELIVERED``, or ``TOKEN_DEAD`` when the provider says the token is gone for good.

        Raises:
            TemporaryPushError: retry later (``retry_after`` when the provider said).
            PermanentPushError: do not retry.
        """

    async def aclose(self) -> None:  # noqa: B027 - most pushers hold nothing to close
        """Release connections."""
