"""Push policy as pure functions: retry timing, ``Retry-After``, and payloads within size limits.

No I/O and no clock here: ``now`` and randomness are passed in, so tests call these directly.
"""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: FCM: "the maximum payload size is 4096 bytes" for a message (data and notification together).
FCM_MAX_BYTES = 4096
#: APNs: 4 KB for a regular remote notification (5 KB is for VoIP only).
APNS_MAX_BYTES = 4096
#: What a truncated preview ends with.
ELLIPSIS = "…"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter, and a give-up horizon.

    Attributes:
        base_s: the first attempt's delay ceiling; doubles per attempt.
        cap_s: the largest ceiling (a longer ``Retry-After`` is still honoured).
        give_up_after_s: no attempt is scheduled later than this after the first one: a
            notification that arrives hours late is noise, and a provider that has failed that long
            needs a human (the dead-letter stream), not more traffic.
    """

    base_s: float = 1.0
    cap_s: float = 300.0
    give_up_after_s: float = 3600.0


def backoff_delay(attempt: int, policy: RetryPolicy, rand: Callable[[], float], *,
                  retry_after: float | None = None) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` = failures so far, from 0).

    Full jitter (uniform in ``[0, min(cap, base·2^attempt)]``) spreads a burst of failures out
    instead of retrying them in lockstep; ``Retry-After`` is a floor the jitter never undercuts.

    Args:
        attempt: how many attempts failed before this one (0 after the first failure).
        policy: the policy.
        rand: a uniform ``[0, 1)`` source (``random.random`` in production).
        retry_after: what the provider asked for, in seconds, if anything.
    """
    ceiling = min(policy.cap_s, policy.base_s * math.pow(2, min(attempt, 62)))
    delay = rand() * ceiling
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return delay


def next_attempt_ms(*, first_ms: int, now_ms: int, attempt: int, policy: RetryPolicy, rand: Callable[[], float],
                    retry_after: float | None = None) -> int | None:
    """When to try again, in ms since the epoch, or None to give up (dead-letter).

    Gives up when the next attempt would fall beyond ``first_ms + give_up_after_s``, so nothing is
    retried forever, whatever ``Retry-After`` says.
    """
    due = now_ms + math.ceil(backoff_delay(attempt, policy, rand, retry_after=retry_after) * 1000)
    if due > first_ms + policy.give_up_after_s * 1000:
        return None
    return due


def parse_retry_after(value: str | None, *, now_s: float) -> float | None:
    """``Retry-After`` as seconds from ``now_s``: delta-seconds or an HTTP-date; None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - now_s)


def truncate_utf8(text: str, max_bytes: int) -> str:
    """The longest prefix of ``text`` whose UTF-8 encoding fits ``max_bytes``, never splitting a
    character; an ellipsis marks a cut when there is room for it."""
    if max_bytes <= 0:
        return ""
    raw = text.encode()
    if len(raw) <= max_bytes:
        return text
    room = max_bytes - len(ELLIPSIS.encode())
    if room <= 0:
        return raw[:max_bytes].decode(errors="ignore")
    return raw[:room].decode(errors="ignore") + ELLIPSIS


def fit_payload(build: Callable[[str | None], dict[str, Any]], text: str | None, max_bytes: int) -> dict[str, Any]:
    """``build(text)`` with ``text`` shortened until the JSON encoding fits ``max_bytes``.

    Args:
        build: renders the whole provider payload around a (possibly shortened) text.
        text: the preview, or None (privacy mode).
        max_bytes: the provider's limit.

    Raises:
        ValueError: the payload does not fit even without any text.
    """
    payload = build(text)
    size = encoded_size(payload)
    if size <= max_bytes:
        return payload
    if text is None:
        raise ValueError(f"payload of {size} bytes exceeds {max_bytes} without any text")
    # JSON escaping can make each text byte cost up to 6 bytes, so shrink by the overshoot and
    # loop (bounded: the budget strictly decreases and stops at zero).
    budget = len(text.encode())
    while budget > 0:
        budget = max(0, budget - (size - max_bytes))
        payload = build(truncate_utf8(text, budget))
        size = encoded_size(payload)
        if size <= max_bytes:
            return payload
    payload = build("")
    if encoded_size(payload) > max_bytes:
        raise ValueError(f"payload exceeds {max_bytes} bytes without any text")
    return payload


def encoded_size(payload: dict[str, Any]) -> int:
    """Bytes of ``payload`` as the clients put it on the wire (compact JSON, UTF-8)."""
    return len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())


def preview_text(kind: str, body: str | None, *, privacy: bool, preview: bool) -> str | None:
    """The notification text for a message, or None when no text may leave the server."""
    if privacy or not preview or body is None:
        return None
    if kind != "text":
        return f"[{kind}]"
    return body
