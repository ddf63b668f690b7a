"""The fold of a channel's events into message states (mqchat.fold): rules and properties."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from mqchat import fold, schema

USERS = ["ann", "bob", "cy"]
EMOJI = ["👍", "🎉", ":ship_it:"]


@dataclass(frozen=True)
class Ev:
    seq: int
    sender: str
    kind: str
    body: str = ""
    ts: int = 0
    target: int | None = None
    emoji: str | None = None
    op: str | None = None
    thread: int | None = None
    reply_to: int | None = None


@st.composite
def streams(draw: st.DrawFn, max_size: int = 40) -> list[Ev]:
    """Any stream: texts (some thread replies) and events naming earlier, later or missing seqs."""
    n = draw(st.integers(1, max_size))
    events = []
    for seq in range(1, n + 1):
        kind = draw(st.sampled_from(["text", "text", "edit", "delete", "reaction", "reaction", "pin", "unpin"]))
        sender = draw(st.sampled_from(USERS))
        ref = draw(st.integers(1, n + 1))
        if kind == "text":
            thread = draw(st.none() | st.integers(1, seq))
            events.append(Ev(seq, sender, kind, body=f"m{seq}", ts=seq * 10, thread=thread))
        elif kind == "reaction":
            events.append(Ev(seq, sender, kind, ts=seq * 10, target=ref, emoji=draw(st.sampled_from(EMOJI)),
                             op=draw(st.sampled_from(["add", "remove"]))))
        else:
            events.append(Ev(seq, sender, kind, body=f"e{seq}" if kind == "edit" else "", ts=seq * 10, target=ref))
    return events


@given(streams())
def test_the_fold_is_deterministic(events: list[Ev]) -> None:
    a, b = fold.fold(events), fold.fold(iter(list(events)))
    assert a == b
    assert [m.out("ann") for m in a.messages.values()] == [m.out("ann") for m in b.messages.values()]


@given(streams(), st.data())
def test_incremental_equals_batch(events: list[Ev], data: st.DataObject) -> None:
    k = data.draw(st.integers(0, len(events)))
    assert fold.fold(events[k:], fold.fold(events[:k])) == fold.fold(events)


@given(streams(), st.data())
def test_a_message_state_needs_only_its_related_events(events: list[Ev], data: st.DataObject) -> None:
    """What MessageStore.related returns (the message, events targeting it, its thread replies)
    folds to the same state as the whole channel."""
    full = fold.fold(events).messages
    seqs = data.draw(st.sets(st.sampled_from([e.seq for e in events]), max_size=4))
    related = [e for e in events if e.seq in seqs or e.target in seqs or e.thread in seqs]
    part = fold.fold(related).messages
    for seq in seqs:
        assert part.get(seq) == full.get(seq)


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(EMOJI), st.sampled_from(["add", "remove"])),
                max_size=60))
def test_concurrent_reactions_end_with_exact_counts(ops: list[tuple[str, str, str]]) -> None:
    """Several users adding and removing at once: the channel order decides, and each count is the
    number of users whose last word on that emoji was add (idempotent per user, message, emoji)."""
    events = [Ev(1, "ann", "text", body="hi")]
    events += [Ev(i + 2, u, "reaction", target=1, emoji=e, op=op) for i, (u, e, op) in enumerate(ops)]
    last: dict[tuple[str, str], str] = {}
    for u, e, op in ops:
        last[(u, e)] = op
    expected = {e: {u for (u, e2), op in last.items() if e2 == e and op == "add"} for e in EMOJI}
    state = fold.fold(events).messages[1]
    assert {e: set(users) for e, users in state.reactions} == {e: us for e, us in expected.items() if us}
    out = state.out("bob")
    assert {r.emoji: (r.count, r.me) for r in out.reactions} == {
        e: (len(us), "bob" in us) for e, us in expected.items() if us}


def test_edit_delete_pin_and_threads() -> None:
    events = [
        Ev(1, "ann", "text", body="root", ts=10),
        Ev(2, "bob", "text", body="r1", ts=20, thread=1),
        Ev(3, "ann", "edit", body="root v2", ts=30, target=1),
        Ev(4, "bob", "reaction", ts=40, target=1, emoji="👍", op="add"),
        Ev(5, "ann", "pin", ts=50, target=1),
        Ev(6, "cy", "text", body="r2", ts=60, thread=1),
        Ev(7, "bob", "delete", ts=70, target=2),
        Ev(8, "bob", "edit", body="too late", ts=80, target=2),
    ]
    s = fold.fold(events)
    root, reply = s.messages[1], s.messages[2]
    assert (root.body, root.edited_ts, root.pinned) == ("root v2", 30, True)
    assert (root.reply_count, root.last_reply_ts) == (2, 60)
    assert root.out("bob").reactions == [schema.ReactionOut("👍", 1, True)]
    assert (reply.deleted, reply.body, reply.edited_ts) == (True, "", None)
    assert s.pinned() == [1]
    deleted = fold.fold([Ev(9, "ann", "delete", target=1)], s)
    assert deleted.messages[1].out("bob") == schema.MessageStateOut(
        body="", edited_ts=30, deleted=True, pinned=False, reactions=[], reply_count=2, last_reply_ts=60)
    assert deleted.pinned() == []


def test_reactions_stop_at_the_distinct_emoji_limit() -> None:
    events = [Ev(1, "ann", "text", body="hi")]
    events += [Ev(i + 2, "bob", "reaction", target=1, emoji=f":e{i}:", op="add")
               for i in range(schema.MAX_REACTION_EMOJI + 1)]
    s = fold.fold(events)
    assert len(s.messages[1].reactions) == schema.MAX_REACTION_EMOJI
    extra = Ev(0, "cy", "reaction", target=1, emoji=":more:", op="add")
    assert fold.refusal(s, extra) == (fold.TOO_MANY_REACTIONS, fold.refusal(s, extra)[1])  # type: ignore[index]
    again = Ev(0, "cy", "reaction", target=1, emoji=":e0:", op="add")
    assert fold.refusal(s, again) is None  # an emoji already there still takes more users


def test_refusals() -> None:
    s = fold.fold([Ev(1, "ann", "text", body="a"), Ev(2, "bob", "text", body="b", thread=1),
                   Ev(3, "ann", "text", body="c"), Ev(4, "ann", "delete", target=3)])

    def code(e: Ev) -> str | None:
        why = fold.refusal(s, e)
        return why[0] if why else None

    assert code(Ev(0, "ann", "edit", body="x", target=1)) is None
    assert code(Ev(0, "bob", "edit", body="x", target=1)) == "forbidden"
    assert code(Ev(0, "bob", "delete", target=1)) == "forbidden"
    assert fold.may_delete("bob", "ann", manage_messages=True)
    assert code(Ev(0, "ann", "edit", body="x", target=9)) == "not_found"
    assert code(Ev(0, "bob", "reaction", target=3, emoji="👍", op="add")) == "target_deleted"
    assert code(Ev(0, "ann", "pin", target=3)) == "target_deleted"
    assert code(Ev(0, "ann", "text", body="x", thread=2)) == "invalid_thread"
    assert code(Ev(0, "ann", "text", body="x", thread=9)) == "not_found"
    assert code(Ev(0, "ann", "text", body="x", reply_to=3)) == "target_deleted"
    assert code(Ev(0, "ann", "text", body="x", reply_to=2, thread=1)) is None
