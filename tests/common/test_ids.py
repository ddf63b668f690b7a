from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqchat import ids
from mqchat.errors import InvalidId


@pytest.mark.parametrize("value", ["a", "A-b_9", "x" * 64])
def test_valid_ids_pass(value: str) -> None:
    assert ids.check_id("user", value) == value


@pytest.mark.parametrize("value", ["", "x" * 65, "a/b", "a+b", "#", "$SYS", "é", "a b", None, 5])
def test_invalid_ids_are_refused_with_the_kind_named(value: object) -> None:
    with pytest.raises(InvalidId, match="invalid channel id"):
        ids.check_id("channel", value)


def test_random_ids_follow_the_grammar_and_differ() -> None:
    made = {ids.new_random_id("c") for _ in range(1000)}
    assert len(made) == 1000
    assert all(ids.is_valid_id(i) and i.startswith("c") for i in made)


@given(st.integers(ids.EPOCH_MS, ids.EPOCH_MS + ids.MAX_TIMESTAMP), st.integers(0, ids.MAX_WORKER),
       st.integers(0, ids.MAX_SEQUENCE))
def test_snowflake_round_trips(ts: int, worker: int, seq: int) -> None:
    assert ids.parse(ids.compose(ts, worker, seq)) == ids.SnowflakeParts(ts, worker, seq)


@given(st.lists(st.integers(-5_000, 5_000), min_size=1, max_size=300))
def test_snowflake_is_strictly_monotonic_whatever_the_clock_does(steps: list[int]) -> None:
    gen = ids.Snowflake(worker_id=7)
    now = ids.EPOCH_MS + 10**9
    last = 0
    for step in steps:
        now += step  # the clock jumps forwards and backwards
        nxt = gen.next_id(now)
        assert nxt > last
        assert ids.parse(nxt).worker_id == 7
        last = nxt


def test_snowflake_borrows_the_next_millisecond_when_one_is_spent() -> None:
    gen = ids.Snowflake(worker_id=1)
    now = ids.EPOCH_MS + 1000
    made = [gen.next_id(now) for _ in range(ids.MAX_SEQUENCE + 2)]
    assert made == sorted(set(made))
    assert ids.parse(made[-1]).timestamp_ms == now + 1


@pytest.mark.parametrize("bad", [(ids.EPOCH_MS - 1, 0, 0), (ids.EPOCH_MS, 1024, 0), (ids.EPOCH_MS, 0, 4096)])
def test_compose_refuses_out_of_range_fields(bad: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="outside"):
        ids.compose(*bad)


def test_worker_id_is_checked() -> None:
    with pytest.raises(ValueError, match="worker id"):
        ids.Snowflake(worker_id=1024)
