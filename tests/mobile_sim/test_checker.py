"""The checker on hand-built observations: each invariant passes a clean run and names exactly the
ids of a broken one."""

from __future__ import annotations

import time

import pytest

from mobile_sim import checker
from mobile_sim.checker import Limits, Violation, check
from mobile_sim.observe import Badge, Delivery, Observations, Online, PresenceSeen, Push, Send, Synced

CH = "c1"
ALICE_PHONE, ALICE_TABLET, BOB_PHONE = "alice:phone", "alice:tablet", "bob:phone"
DEVICES = (ALICE_PHONE, ALICE_TABLET, BOB_PHONE)


def world(*, online: bool = True) -> Observations:
    obs = Observations(members={CH: {"alice", "bob"}},
                       devices_of={"alice": [ALICE_PHONE, ALICE_TABLET], "bob": [BOB_PHONE]})
    if online:
        obs.online = [Online(d, t_connected=0.0) for d in DEVICES]
    return obs


def send(obs: Observations, seq: int, *, sender: str = ALICE_PHONE, t: float | None = None,
         to: tuple[str, ...] = DEVICES) -> str:
    """An acked message ``m{seq}`` (cmid ``k{seq}``) at ``t`` (default ``seq``), delivered live to ``to``."""
    t = float(seq) if t is None else t
    mid = f"m{seq}"
    obs.sends.append(Send(sender, CH, f"k{seq}", t_first=t - 0.1, t_ack=t, id=mid, seq=seq, ack_ids=[mid]))
    for d in to:
        deliver(obs, d, seq, t=t + 0.01, sender=sender)
    return mid


def deliver(obs: Observations, device: str, seq: int, *, t: float, mid: str | None = None,
            sender: str = ALICE_PHONE, via: str = "live", cmid: str | None = None) -> None:
    assert via in ("live", "sync")
    obs.deliveries.append(Delivery(device, CH, mid or f"m{seq}", seq, sender.split(":")[0], t,
                                   "live" if via == "live" else "sync", cmid=cmid or f"k{seq}"))


def only(verdict: checker.Verdict) -> list[tuple[str, tuple[str, ...]]]:
    return [(v.invariant, v.ids) for v in verdict.violations]


# --- a clean run ---------------------------------------------------------------------------------


def test_clean_run_passes_and_counts_what_it_checked() -> None:
    obs = world()
    for seq in (1, 2, 3):
        send(obs, seq)
    deliver(obs, BOB_PHONE, 2, t=9.0, via="sync")  # overlap between live and sync is normal
    verdict = check(obs)
    assert verdict.ok, verdict.summary()
    c = verdict.counts
    assert (c.devices, c.channels, c.acked, c.deliveries, c.live, c.synced, c.expected) == (3, 1, 3, 10, 9, 1, 9)
    assert "checked 3 acked messages and 10 deliveries (9 live, 1 from sync) on 3 devices" in verdict.summary()
    assert "OK" in verdict.summary()


# --- 1. no acked message lost --------------------------------------------------------------------


def test_a_message_missing_on_one_device_is_lost_with_its_id_and_that_device() -> None:
    obs = world()
    send(obs, 1)
    send(obs, 2, to=(ALICE_PHONE, ALICE_TABLET))
    verdict = check(obs)
    assert only(verdict) == [(checker.NO_LOSS, ("m2", BOB_PHONE))]
    assert not verdict.ok
    assert "FAILED: 1 violations" in verdict.summary()


def test_a_lost_message_in_the_middle_is_also_a_gap_naming_it() -> None:
    obs = world()
    send(obs, 1)
    send(obs, 2, to=(ALICE_PHONE, ALICE_TABLET))
    send(obs, 3)
    assert only(check(obs)) == [(checker.NO_LOSS, ("m2", BOB_PHONE)), (checker.GAP, ("m2", BOB_PHONE))]


def test_a_device_offline_since_before_the_ack_and_never_synced_is_not_expected() -> None:
    obs = world()
    obs.online = [Online(ALICE_PHONE, 0.0), Online(ALICE_TABLET, 0.0),
                  Online(BOB_PHONE, 0.0, t_closed=0.5, how="network_loss")]
    send(obs, 1, to=(ALICE_PHONE, ALICE_TABLET))
    assert check(obs).ok


def test_a_device_that_synced_after_the_ack_is_expected_even_if_the_sync_returned_nothing() -> None:
    obs = world()
    obs.online = [Online(ALICE_PHONE, 0.0), Online(ALICE_TABLET, 0.0), Online(BOB_PHONE, 0.0, 0.5, "disconnect")]
    send(obs, 1, to=(ALICE_PHONE, ALICE_TABLET))
    obs.syncs.append(Synced(BOB_PHONE, t=5.0))
    assert only(check(obs)) == [(checker.NO_LOSS, ("m1", BOB_PHONE))]
    # a sync of another channel does not count; one of this channel does
    obs.syncs = [Synced(BOB_PHONE, t=5.0, channel="other")]
    assert check(obs).ok
    obs.syncs = [Synced(BOB_PHONE, t=5.0, channel=CH)]
    assert only(check(obs)) == [(checker.NO_LOSS, ("m1", BOB_PHONE))]


def test_a_device_that_reconnected_after_the_ack_is_expected() -> None:
    obs = world()
    obs.online = [Online(ALICE_PHONE, 0.0), Online(ALICE_TABLET, 0.0), Online(BOB_PHONE, 0.0, 0.5, "disconnect"),
                  Online(BOB_PHONE, 3.0)]
    send(obs, 1, to=(ALICE_PHONE, ALICE_TABLET))
    assert only(check(obs)) == [(checker.NO_LOSS, ("m1", BOB_PHONE))]
    deliver(obs, BOB_PHONE, 1, t=3.1, via="sync")
    assert check(obs).ok


def test_refused_connections_do_not_make_a_device_expected() -> None:
    obs = world()
    obs.online = [Online(ALICE_PHONE, 0.0), Online(ALICE_TABLET, 0.0), Online(BOB_PHONE, 2.0, 2.0, "refused")]
    send(obs, 1, to=(ALICE_PHONE, ALICE_TABLET))
    assert check(obs).ok


def test_a_channel_without_recorded_members_is_counted_not_judged() -> None:
    obs = world()
    obs.members = {}
    send(obs, 1, to=())
    verdict = check(obs)
    assert verdict.ok
    assert verdict.counts.unjudged_messages == 1


# --- 2. one gap-free order -----------------------------------------------------------------------


def test_a_lower_seq_arriving_live_after_a_higher_one_is_a_reorder() -> None:
    obs = world()
    send(obs, 1)
    send(obs, 2, to=(ALICE_PHONE, ALICE_TABLET))
    send(obs, 3)
    deliver(obs, BOB_PHONE, 2, t=3.5)  # after m3 (t 3.01)
    assert only(check(obs)) == [(checker.REORDER, ("m2", "m3", BOB_PHONE))]


def test_a_reorder_seen_on_several_devices_is_one_violation() -> None:
    obs = world()
    send(obs, 1)
    send(obs, 3, t=2.0)
    obs.sends.append(Send(ALICE_PHONE, CH, "k2", 1.5, t_ack=1.6, id="m2", seq=2, ack_ids=["m2"]))
    for d in DEVICES:
        deliver(obs, d, 2, t=2.5)
    verdict = check(obs)
    assert only(verdict) == [(checker.REORDER, ("m2", "m3", *sorted(DEVICES)))]
    assert "seq 2 of c1 arrived live after seq 3 on 3 device(s)" in verdict.violations[0].detail


def test_a_live_gap_filled_by_sync_is_fine() -> None:
    obs = world()
    send(obs, 1)
    send(obs, 2, to=(ALICE_PHONE, ALICE_TABLET))
    send(obs, 3)
    deliver(obs, BOB_PHONE, 2, t=3.2, via="sync")
    assert check(obs).ok


def test_a_gap_left_after_the_final_sync_names_the_missing_ids_and_devices() -> None:
    obs = world()
    for seq in range(1, 6):
        send(obs, seq, to=(ALICE_PHONE, ALICE_TABLET) if seq in (2, 3) else DEVICES)
    obs.online = [Online(ALICE_PHONE, 0.0), Online(ALICE_TABLET, 0.0), Online(BOB_PHONE, 0.0, 1.5, "disconnect"),
                  Online(BOB_PHONE, 3.8)]
    # bob missed 2 and 3 while away and did not sync after reconnecting: lost, and a hole in 1..5
    verdict = check(obs)
    assert only(verdict) == [(checker.NO_LOSS, ("m2", BOB_PHONE)), (checker.NO_LOSS, ("m3", BOB_PHONE)),
                             (checker.GAP, ("m2", "m3", BOB_PHONE))]
    assert "seqs 2..3 of c1 missing on 1 device(s)" in verdict.violations[2].detail


def test_a_gap_of_a_seq_nobody_saw_names_only_the_devices() -> None:
    obs = world()
    send(obs, 1)
    send(obs, 3)
    assert only(check(obs)) == [(checker.GAP, tuple(sorted(DEVICES)))]


def test_one_seq_with_two_ids_is_reported_with_both_ids() -> None:
    obs = world()
    send(obs, 1)
    send(obs, 2, to=(ALICE_PHONE, ALICE_TABLET))
    deliver(obs, BOB_PHONE, 2, t=2.02, mid="mX")
    found = only(check(obs))
    assert (checker.SAME_SEQ, ("m2", "mX")) in found
    assert (checker.NO_LOSS, ("m2", BOB_PHONE)) in found  # bob holds another message at m2's place
    assert len(found) == 3  # and mX says cmid k2, which is m2's: a dedup failure too
    assert (checker.DEDUP_CMID, ("k2", "m2", "mX")) in found


def test_an_ack_and_a_delivery_disagreeing_on_a_seq_is_a_same_seq_violation() -> None:
    obs = world()
    send(obs, 1)
    obs.sends.append(Send(BOB_PHONE, CH, "b1", 1.5, t_ack=1.6, id="mB", seq=1, ack_ids=["mB"]))
    found = only(check(obs))
    assert (checker.SAME_SEQ, ("m1", "mB")) in found


# --- 3. no duplicates ----------------------------------------------------------------------------


def test_qos1_redelivery_is_counted_not_a_violation() -> None:
    obs = world()
    send(obs, 1)
    send(obs, 2)
    deliver(obs, BOB_PHONE, 1, t=2.5)  # m1 again, after m2: a redelivery, not a reorder
    verdict = check(obs)
    assert verdict.ok, verdict.summary()
    assert verdict.counts.live_redeliveries == 1


def test_a_retried_cmid_acked_with_two_ids_is_a_dedup_violation() -> None:
    obs = world()
    send(obs, 1)
    obs.sends[0].ack_ids.append("m9")
    obs.sends[0].attempts = 2
    assert only(check(obs)) == [(checker.DEDUP_CMID, ("k1", "m1", "m9"))]


def test_the_same_cmid_from_two_devices_of_one_user_must_be_one_message() -> None:
    obs = world()
    send(obs, 1)
    obs.sends.append(Send(ALICE_TABLET, CH, "k1", 1.2, t_ack=1.3, id="m1", seq=1, ack_ids=["m1"]))
    assert check(obs).ok  # deduplicated, as the server keys on (channel, user, cmid)
    obs.sends[-1] = Send(ALICE_TABLET, CH, "k1", 1.2, t_ack=1.3, id="m7", seq=2, ack_ids=["m7"])
    for d in DEVICES:
        deliver(obs, d, 2, t=1.4, mid="m7", cmid="k1")
    assert only(check(obs)) == [(checker.DEDUP_CMID, ("k1", "m1", "m7"))]


def test_one_id_with_two_seqs_is_a_dedup_violation() -> None:
    obs = world()
    send(obs, 1)
    send(obs, 2)
    deliver(obs, BOB_PHONE, 3, t=2.5, mid="m2", cmid="k2")
    found = only(check(obs))
    assert (checker.DEDUP_ID, ("m2",)) in found
    assert [v.detail for v in check(obs).violations if v.invariant == checker.DEDUP_ID] == [
        "message m2 had seqs [2, 3]"]


def test_one_id_from_two_cmids_is_a_dedup_violation() -> None:
    obs = world()
    send(obs, 1)
    obs.deliveries[-1] = Delivery(BOB_PHONE, CH, "m1", 1, "alice", 1.01, "live", cmid="other")
    assert only(check(obs)) == [(checker.DEDUP_ID, ("m1",))]


# --- 4. push iff offline -------------------------------------------------------------------------


def push_world() -> Observations:
    """bob is offline from 0.5 on (clean disconnect); alice stays online."""
    obs = world()
    obs.push_expected = True
    obs.online = [Online(ALICE_PHONE, -10.0), Online(ALICE_TABLET, -10.0),
                  Online(BOB_PHONE, -10.0, 0.5, "disconnect"), Online(BOB_PHONE, 30.0)]
    send(obs, 10, to=(ALICE_PHONE, ALICE_TABLET))
    deliver(obs, BOB_PHONE, 10, t=30.1, via="sync")
    obs.syncs.append(Synced(BOB_PHONE, 30.0))
    return obs


def test_an_offline_member_pushed_passes() -> None:
    obs = push_world()
    obs.pushes.append(Push(BOB_PHONE, CH, "m10", 10.3))
    verdict = check(obs)
    assert verdict.ok, verdict.summary()
    assert verdict.counts.push_decisions == 1


def test_an_offline_member_not_pushed_is_a_missing_push() -> None:
    verdict = check(push_world())
    assert only(verdict) == [(checker.PUSH_MISSING, ("m10", BOB_PHONE))]


def test_a_member_who_muted_or_has_no_registered_device_needs_no_push() -> None:
    obs = push_world()
    obs.muted = {("bob", CH)}
    assert check(obs).ok
    obs = push_world()
    obs.push_devices = {ALICE_PHONE}
    assert check(obs).ok


def test_a_push_to_a_member_online_throughout_is_unexpected() -> None:
    obs = push_world()
    obs.pushes.append(Push(BOB_PHONE, CH, "m10", 10.3))
    obs.pushes.append(Push(ALICE_TABLET, CH, "m10", 10.3))
    assert only(check(obs)) == [(checker.PUSH_UNEXPECTED, ("m10", ALICE_TABLET))]
    # every device of a user counts: alice's phone was online, so her tablet gets nothing either
    obs = push_world()
    obs.online = [o for o in obs.online if o.device != ALICE_TABLET]
    obs.pushes += [Push(BOB_PHONE, CH, "m10", 10.3), Push(ALICE_TABLET, CH, "m10", 10.3)]
    verdict = check(obs)
    assert only(verdict) == [(checker.PUSH_UNEXPECTED, ("m10", ALICE_TABLET))]


def test_a_push_of_the_senders_own_message_or_to_a_muted_member_is_unexpected() -> None:
    obs = push_world()
    obs.online = [o for o in obs.online if not o.device.startswith("alice")]  # alice entirely offline
    obs.pushes += [Push(BOB_PHONE, CH, "m10", 10.3), Push(ALICE_TABLET, CH, "m10", 10.3)]
    found = check(obs).violations
    assert [(v.invariant, v.ids) for v in found if v.invariant.startswith("push")] == [
        (checker.PUSH_UNEXPECTED, ("m10", ALICE_TABLET))]
    assert "sender's own device" in found[0].detail
    obs = push_world()
    obs.muted = {("bob", CH)}
    obs.pushes.append(Push(BOB_PHONE, CH, "m10", 10.3))
    assert only(check(obs)) == [(checker.PUSH_UNEXPECTED, ("m10", BOB_PHONE))]


def test_inside_the_grace_window_neither_a_push_nor_its_absence_is_judged() -> None:
    # bob disconnected 1 s before the ack: the server may not have seen it yet (grace 2 s)
    obs = push_world()
    obs.online[2] = Online(BOB_PHONE, -10.0, 9.0, "disconnect")
    assert check(obs).ok
    obs.pushes.append(Push(BOB_PHONE, CH, "m10", 10.3))
    assert check(obs).ok
    # bob connected 1 s before the ack and stays: a push is not judged, its absence neither
    obs = push_world()
    obs.online[2:] = [Online(BOB_PHONE, 9.0)]
    obs.deliveries.append(Delivery(BOB_PHONE, CH, "m10", 10, "alice", 10.01, "live", cmid="k10"))
    obs.pushes.append(Push(BOB_PHONE, CH, "m10", 10.3))
    assert check(obs).ok
    # ... but with more than the grace, the push is wrong
    obs.online[2:] = [Online(BOB_PHONE, 7.0)]
    assert only(check(obs)) == [(checker.PUSH_UNEXPECTED, ("m10", BOB_PHONE))]


def test_a_lost_network_keeps_a_device_possibly_online_for_the_detection_time() -> None:
    obs = push_world()
    obs.online[2] = Online(BOB_PHONE, -10.0, 5.0, "network_loss")
    assert check(obs).ok  # the broker may take 1.5 keep-alives to notice
    assert only(check(obs, Limits(network_loss_s=3.0))) == [(checker.PUSH_MISSING, ("m10", BOB_PHONE))]


def test_messages_acked_at_the_end_of_the_run_are_not_judged_for_missing_pushes() -> None:
    obs = push_world()
    assert check(obs, Limits(t_end=12.0)).ok
    assert not check(obs, Limits(t_end=16.0)).ok


def test_push_rules_apply_only_when_push_was_expected_and_repeats_are_counted() -> None:
    obs = push_world()
    obs.push_expected = False
    assert check(obs).ok
    obs = push_world()
    obs.pushes += [Push(BOB_PHONE, CH, "m10", 10.3), Push(BOB_PHONE, CH, "m10", 11.0), Push(BOB_PHONE, CH, "zz", 1)]
    verdict = check(obs)
    assert verdict.ok
    assert (verdict.counts.push_duplicates, verdict.counts.pushes_unjudged) == (1, 1)


# --- 5, 6. badges and presence -------------------------------------------------------------------


def test_badges_must_equal_the_formula() -> None:
    obs = world()
    obs.badges = [Badge(BOB_PHONE, CH, shown=3, expected=3, t=1.0)]
    assert check(obs).ok
    obs.badges.append(Badge(ALICE_TABLET, CH, shown=4, expected=2, t=2.0))
    verdict = check(obs)
    assert only(verdict) == [(checker.BADGE, (ALICE_TABLET, CH))]
    assert verdict.violations[0].detail == "alice:tablet was shown 4 unread in c1, the formula gives 2"


def test_presence_must_converge() -> None:
    obs = world()
    obs.presence = [PresenceSeen(BOB_PHONE, "alice", "online", "online")]
    assert check(obs).ok
    obs.presence.append(PresenceSeen(ALICE_PHONE, "bob", "online", "offline"))
    assert only(check(obs)) == [(checker.PRESENCE, (ALICE_PHONE, "bob"))]


# --- the single-invariant entry points agree with check() -----------------------------------------


def test_each_rule_alone_finds_what_check_finds() -> None:
    obs = push_world()
    send(obs, 11, to=(ALICE_PHONE,))
    deliver(obs, ALICE_TABLET, 11, t=11.0, mid="mZ")
    obs.badges.append(Badge(BOB_PHONE, CH, 1, 2, 1.0))
    obs.presence.append(PresenceSeen(ALICE_PHONE, "bob", "away", "online"))
    alone: list[Violation] = [
        *checker.lost_messages(obs), *checker.order_violations(obs), *checker.duplicate_violations(obs),
        *checker.push_violations(obs), *checker.badge_violations(obs), *checker.presence_violations(obs)]
    assert sorted(alone, key=repr) == sorted(check(obs).violations, key=repr)
    assert {v.invariant for v in alone} == {checker.NO_LOSS, checker.SAME_SEQ, checker.DEDUP_CMID,
                                            checker.PUSH_MISSING, checker.BADGE, checker.PRESENCE}


# --- speed ---------------------------------------------------------------------------------------


def test_ten_thousand_devices_and_a_hundred_thousand_deliveries_check_in_seconds() -> None:
    users = [f"u{i}" for i in range(5_000)]
    obs = Observations(push_expected=True)
    for u in users:
        obs.devices_of[u] = [f"{u}:a", f"{u}:b"]
        obs.online.append(Online(f"{u}:a", 0.0))
        obs.online.append(Online(f"{u}:b", 0.0, 50.0, "disconnect"))
    for c in range(1_000):  # 1,000 channels of 5 users = 10 devices; 10 messages each
        channel = f"c{c}"
        members = users[(c * 5) % 5_000:(c * 5) % 5_000 + 5]
        obs.members[channel] = set(members)
        for seq in range(1, 11):
            t = c * 0.001 + seq
            mid = f"{channel}-{seq}"
            obs.sends.append(Send(f"{members[seq % 5]}:a", channel, f"k{seq}", t - 0.01, t_ack=t, id=mid,
                                  seq=seq, ack_ids=[mid]))
            for u in members:
                for d in obs.devices_of[u]:
                    obs.deliveries.append(Delivery(d, channel, mid, seq, members[seq % 5], t + 0.01, "live", f"k{seq}"))
    assert len(obs.deliveries) == 100_000
    started = time.perf_counter()
    verdict = check(obs)
    took = time.perf_counter() - started
    assert verdict.ok, verdict.summary()
    assert verdict.counts.expected == 100_000
    assert took < 15, f"check took {took:.1f}s"  # a few seconds; loose bound for a shared machine


@pytest.mark.parametrize("invariant", [checker.NO_LOSS, checker.GAP, checker.REORDER])
def test_summary_lists_violations_by_invariant(invariant: str) -> None:
    obs = world()
    send(obs, 1)
    send(obs, 2, to=(ALICE_PHONE, ALICE_TABLET))
    send(obs, 3)
    if invariant == checker.REORDER:
        deliver(obs, BOB_PHONE, 2, t=3.5)
    text = check(obs).summary()
    assert f"  {invariant}: 1" in text
