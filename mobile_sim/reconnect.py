"""What a device does after a failed or lost connection: the reconnect decision table.

Pure: :func:`decide` takes the failure, the attempt number, whether the device's token has
expired by its own clock, and a uniform random number; it does no I/O and reads no clock, so the
table is unit-tested directly (tests/mobile_sim/test_reconnect.py) and every simulated device
follows exactly the documented rules (docs/simulator.md, "Reconnecting").

============================  ======================================  =====================
failure                       cause                                    decision
============================  ======================================  =====================
CONNACK 0x01                  unacceptable protocol version            stop
CONNACK 0x02                  client identifier rejected               stop
CONNACK 0x03                  server unavailable                       retry (backoff)
CONNACK 0x04                  bad user name or password                re-login if the token
                                                                       has expired, else stop
CONNACK 0x05                  not authorized                           re-login if the token
                                                                       has expired, else stop
connection refused            nothing listening (broker restarting)    retry (backoff)
connection reset / lost       dropped while connecting or later        retry (backoff)
timeout                       no CONNACK, or TCP connect timed out     retry (backoff)
============================  ======================================  =====================

A re-login that is refused again (the fresh token is not expired, so the refusal is about
something else) stops. Backoff is "full jitter": the delay is uniform in
``[0, min(cap, base * 2**attempt))``, so a crowd of devices that lost the same broker spreads its
reconnections over the whole window instead of coming back in lockstep.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from enum import StrEnum


class Failure(StrEnum):
    """Why a connection attempt failed or a connection ended."""

    PROTOCOL = "protocol"
    """CONNACK 0x01: the server does not speak MQTT 3.1.1."""
    IDENTIFIER_REJECTED = "identifier_rejected"
    """CONNACK 0x02."""
    SERVER_UNAVAILABLE = "server_unavailable"
    """CONNACK 0x03."""
    BAD_CREDENTIALS = "bad_credentials"
    """CONNACK 0x04."""
    NOT_AUTHORIZED = "not_authorized"
    """CONNACK 0x05 (mqchat's answer to an expired, badly signed or mismatched token)."""
    CONNECTION_REFUSED = "connection_refused"
    CONNECTION_LOST = "connection_lost"
    TIMEOUT = "timeout"


#: CONNACK return codes of MQTT 3.1.1 (section 3.2.2.3).
CONNACK: dict[int, Failure] = {
    1: Failure.PROTOCOL,
    2: Failure.IDENTIFIER_REJECTED,
    3: Failure.SERVER_UNAVAILABLE,
    4: Failure.BAD_CREDENTIALS,
    5: Failure.NOT_AUTHORIZED,
}

TERMINAL = frozenset({Failure.PROTOCOL, Failure.IDENTIFIER_REJECTED})
"""Retrying cannot help: the client or its identity is wrong."""
CREDENTIALS = frozenset({Failure.BAD_CREDENTIALS, Failure.NOT_AUTHORIZED})
"""Retrying with the same token cannot help; a fresh token can, if the old one expired."""
RETRYABLE = frozenset({Failure.SERVER_UNAVAILABLE, Failure.CONNECTION_REFUSED, Failure.CONNECTION_LOST,
                       Failure.TIMEOUT})
"""The server or the network is (briefly) unavailable."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with full jitter.

    Attributes:
        base_s: the bound of the first retry's delay.
        cap_s: no delay is ever longer than this.
        max_attempts: stop after this many failed attempts in a row (0: never give up).
    """

    base_s: float = 0.5
    cap_s: float = 30.0
    max_attempts: int = 0

    def bound(self, attempt: int) -> float:
        """The upper end of the delay before retry number ``attempt`` (0-based)."""
        # 2**attempt overflows a float past ~1024 attempts; the cap is reached long before.
        return min(self.cap_s, self.base_s * 2.0 ** min(attempt, 64))

    def delay(self, attempt: int, rand: float) -> float:
        """Full jitter: ``rand`` (uniform in [0, 1)) scaled to ``[0, bound(attempt))``."""
        return min(max(rand, 0.0), 1.0) * self.bound(attempt)


@dataclass(frozen=True, slots=True)
class Retry:
    delay_s: float


@dataclass(frozen=True, slots=True)
class Stop:
    failure: Failure
    reason: str


@dataclass(frozen=True, slots=True)
class Relogin:
    """Get a fresh token (log in again), then connect at once."""


Decision = Retry | Stop | Relogin


def decide(failure: Failure, attempt: int, *, token_expired: bool, relogged: bool, rand: float,
           backoff: Backoff) -> Decision:
    """The reconnect decision.

    Args:
        failure: why the last attempt failed (or the connection ended).
        attempt: failed attempts in a row so far, this one included minus one (0 for the first).
        token_expired: the device's token has expired (or is about to) by the device's clock.
        relogged: the device already got a fresh token since its last successful connection.
        rand: uniform in [0, 1), for the jitter.
        backoff: the delay policy.
    """
    if failure in TERMINAL:
        return Stop(failure, f"{failure}: retrying cannot help")
    if failure in CREDENTIALS:
        if token_expired and not relogged:
            return Relogin()
        return Stop(failure, f"{failure} with a token that has not expired (or was just renewed)")
    if backoff.max_attempts and attempt + 1 >= backoff.max_attempts:
        return Stop(failure, f"{failure}: gave up after {attempt + 1} attempts")
    return Retry(backoff.delay(attempt, rand))


def classify(exc: BaseException) -> Failure:
    """The :class:`Failure` for an exception from connecting or from a live connection.

    ``ConnectRefused`` (the MQTT client's CONNACK refusal) is recognised by its ``code``
    attribute, so this module needs no MQTT client import.
    """
    code = getattr(exc, "code", None)
    if isinstance(code, int) and type(exc).__name__ == "ConnectRefused":
        return CONNACK.get(code, Failure.PROTOCOL)
    if isinstance(exc, TimeoutError):
        return Failure.TIMEOUT
    if isinstance(exc, ConnectionRefusedError):
        return Failure.CONNECTION_REFUSED
    if isinstance(exc, OSError) and exc.errno in (errno.ECONNREFUSED,):
        return Failure.CONNECTION_REFUSED
    return Failure.CONNECTION_LOST
