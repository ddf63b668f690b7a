from __future__ import annotations

from bridge.sequencer import Draft, Sequencer
from mqchat.ids import EPOCH_MS, Snowflake
from mqchat.storage.base import Position

NOW = EPOCH_MS + 10_000


def draft(channel: str, cmid: str, user: str = "u1") -> Draft:
    return Draft(user, "d1", channel, cmid, "text", f"body {cmid}")


def test_plan_assigns_consecutive_seqs_per_channel_without_changing_state() -> None:
    seq = Sequencer(Snowflake(3))
    seq.load({"a": Position(1, 10), "b": Position(4, 0)})
    plan = seq.plan([draft("a", "1"), draft("b", "1"), draft("a", "2")], {}, NOW)
    assert [(o.message.channel, o.message.epoch, o.message.seq) for o in plan.outcomes] == [
        ("a", 1, 11), ("b", 4, 1), ("a", 1, 12)]
    ids = [o.message.id for o in plan.outcomes]
    assert ids == sorted(ids)
    assert len(set(ids)) == 3
    assert seq.position("a") == Position(1, 10)  # not applied yet
    seq.apply(plan)
    assert seq.position("a") == Position(1, 12)


def test_duplicates_in_batch_in_cache_and_in_store_return_the_original() -> None:
    seq = Sequencer(Snowflake(0))
    seq.load({"a": Position(1, 0)})
    first = seq.plan([draft("a", "x"), draft("a", "x")], {}, NOW)
    assert [o.new for o in first.outcomes] == [True, False]
    assert first.outcomes[0].message == first.outcomes[1].message
    seq.apply(first)
    cached = seq.plan([draft("a", "x")], {}, NOW)
    assert not cached.outcomes[0].new
    assert cached.outcomes[0].message.seq == 1
    original = first.outcomes[0].message
    from_store = Sequencer(Snowflake(0))
    from_store.load({"a": Position(1, 1)})
    found = from_store.plan([draft("a", "x")], {("a", "u1", "x"): original}, NOW)
    assert found.outcomes[0].message == original
    assert not found.outcomes[0].new
    assert found.new_messages == []


def test_same_cmid_from_another_sender_or_channel_is_a_new_message() -> None:
    seq = Sequencer(Snowflake(0))
    seq.load({"a": Position(1, 0), "b": Position(1, 0)})
    plan = seq.plan([draft("a", "x"), draft("a", "x", user="u2"), draft("b", "x")], {}, NOW)
    assert all(o.new for o in plan.outcomes)


def test_forget_drops_positions_so_they_are_reloaded() -> None:
    seq = Sequencer(Snowflake(0))
    seq.load({"a": Position(1, 5)})
    seq.forget(["a"])
    assert seq.unknown_channels(["a"]) == {"a"}


def test_recent_cache_is_bounded() -> None:
    seq = Sequencer(Snowflake(0), recent_max=10)
    seq.load({"a": Position(1, 0)})
    seq.apply(seq.plan([draft("a", str(i)) for i in range(25)], {}, NOW))
    assert seq.recent(("a", "u1", "0")) is None
    assert seq.recent(("a", "u1", "24")) is not None
