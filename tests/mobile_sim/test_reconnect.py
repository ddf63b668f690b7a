"""The reconnect decision table (mobile_sim/reconnect.py, docs/simulator.md "Reconnecting")."""

from __future__ import annotations

import errno

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mobile_sim.mqtt import ConnectionLost, ConnectRefused
from mobile_sim.reconnect import CONNACK, Backoff, Failure, Relogin, Retry, Stop, classify, decide

BACKOFF = Backoff(base_s=0.5, cap_s=30.0)


def _decide(failure: Failure, *, attempt: int = 0, expired: bool = False, relogged: bool = False,
            rand: float = 0.5, backoff: Backoff = BACKOFF) -> object:
    return decide(failure, attempt, token_expired=expired, relogged=relogged, rand=rand, backoff=backoff)


@pytest.mark.parametrize("code", [1, 2])
def test_protocol_and_identifier_refusals_stop_whatever_the_token(code: int) -> None:
    for expired in (False, True):
        decision = _decide(CONNACK[code], expired=expired)
        assert isinstance(decision, Stop)
        assert decision.failure == CONNACK[code]


@pytest.mark.parametrize("code", [4, 5])
def test_credential_refusals_relogin_once_when_the_token_expired(code: int) -> None:
    assert isinstance(_decide(CONNACK[code], expired=True), Relogin)
    # Refused again right after a fresh token: something else is wrong.
    assert isinstance(_decide(CONNACK[code], expired=True, relogged=True), Stop)


@pytest.mark.parametrize("code", [4, 5])
def test_credential_refusals_stop_when_the_token_is_still_valid(code: int) -> None:
    assert isinstance(_decide(CONNACK[code], expired=False), Stop)


@pytest.mark.parametrize("failure", [Failure.SERVER_UNAVAILABLE, Failure.CONNECTION_REFUSED,
                                     Failure.CONNECTION_LOST, Failure.TIMEOUT])
def test_unavailable_and_network_failures_retry_with_backoff(failure: Failure) -> None:
    decision = _decide(failure, attempt=3, rand=0.5)
    assert decision == Retry(0.5 * min(30.0, 0.5 * 2**3))


def test_retry_gives_up_after_max_attempts_when_set() -> None:
    limited = Backoff(0.5, 30.0, max_attempts=3)
    assert isinstance(_decide(Failure.TIMEOUT, attempt=1, backoff=limited), Retry)
    assert isinstance(_decide(Failure.TIMEOUT, attempt=2, backoff=limited), Stop)


def test_every_connack_code_and_network_error_is_classified() -> None:
    for code, failure in CONNACK.items():
        assert classify(ConnectRefused(code)) == failure
    assert classify(ConnectRefused(9)) == Failure.PROTOCOL
    assert classify(TimeoutError()) == Failure.TIMEOUT
    assert classify(ConnectionRefusedError(errno.ECONNREFUSED, "refused")) == Failure.CONNECTION_REFUSED
    assert classify(ConnectionResetError(errno.ECONNRESET, "reset")) == Failure.CONNECTION_LOST
    assert classify(ConnectionLost("gone")) == Failure.CONNECTION_LOST
    assert classify(OSError(errno.ENETUNREACH, "unreachable")) == Failure.CONNECTION_LOST


@given(attempt=st.integers(min_value=0, max_value=10_000), rand=st.floats(min_value=0.0, max_value=1.0),
       base=st.floats(min_value=0.001, max_value=10.0), cap=st.floats(min_value=0.01, max_value=600.0))
def test_backoff_is_capped_full_jitter(attempt: int, rand: float, base: float, cap: float) -> None:
    policy = Backoff(base, cap)
    bound = min(cap, base * 2.0 ** min(attempt, 64))
    delay = policy.delay(attempt, rand)
    assert 0.0 <= delay <= cap
    assert delay <= bound
    # Full jitter: the random number spans the whole window, from zero to the bound.
    assert delay == pytest.approx(rand * bound)
    assert policy.delay(attempt, 0.0) == 0.0


@given(attempt=st.integers(min_value=0, max_value=200))
def test_backoff_bound_grows_until_the_cap_then_stays(attempt: int) -> None:
    assert BACKOFF.bound(attempt) <= BACKOFF.bound(attempt + 1) <= BACKOFF.cap_s
    if attempt >= 6:  # 0.5 * 2**6 = 32 > 30
        assert BACKOFF.bound(attempt) == BACKOFF.cap_s
