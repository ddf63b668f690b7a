"""Judge a run: the system's invariants, checked over what the simulated devices saw.

Every function here is pure: it reads an :class:`~mobile_sim.observe.Observations` and returns
:class:`Violation` s, each naming the exact message ids, cmids and devices involved. :func:`check`
runs them all and returns a :class:`Verdict` with the counts of what was checked, so a report can
say what a clean run proved. Everything is indexed once in dicts and sets (no scan inside a scan):
100,000 deliveries on 10,000 devices take a couple of seconds.

The invariants (``Violation.invariant``, and what ``Violation.ids`` holds):

================== =====================================================================================
``no_loss``        an acked message never reached a device expected to get it: ``(id, *devices)``
``order.same_seq`` one seq of a channel carried two messages (on devices or in acks): ``(*ids)``
``order.gap``      after the final sync a device still misses seqs between its lowest and highest of a
                   channel: ``(*ids of the missing seqs that anyone saw, *devices)``
``order.reorder``  a lower seq arrived live after a higher one: ``(late id, id it came after, *devices)``
``dedup.cmid``     one ``(channel, sender, cmid)`` got two message ids: ``(cmid, *ids)``
``dedup.id``       one message id had two seqs, channels or ``(sender, cmid)`` s: ``(id,)``
``push.unexpected`` a push the rules forbid: ``(id, *devices pushed)``
``push.missing``   a push the rules require never came: ``(id, *devices not pushed)``
``badge``          an unread count shown differs from the formula: ``(device, channel)``
``presence``       an observer's last presence of a user differs from the truth: ``(observer, user)``
``state``          a device's fold of a channel's events differs from history's states: ``(device, channel)``
================== =====================================================================================

Devices appear sorted; message ids in seq order where they have one, else sorted. What "expected"
means for each invariant is in docs/simulator.md ("Checker") and beside each function below.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from mobile_sim.observe import Observations

NO_LOSS = "no_loss"
SAME_SEQ = "order.same_seq"
GAP = "order.gap"
REORDER = "order.reorder"
DEDUP_CMID = "dedup.cmid"
DEDUP_ID = "dedup.id"
PUSH_UNEXPECTED = "push.unexpected"
PUSH_MISSING = "push.missing"
BADGE = "badge"
PRESENCE = "presence"
STATE = "state"

INF = math.inf


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str
    """One of the names above (``no_loss``, ``order.gap``, …); the part before the dot is the invariant."""
    detail: str
    ids: tuple[str, ...]
    """The message ids, cmids and devices involved (see the module docstring for each invariant)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """How much slack the timing-dependent rules (push) allow. Times are in seconds.

    Args:
        presence_grace_s: how long the server may take to see a connection or a clean disconnect
            (broker lease write, presence publisher, fan-out read).
        network_loss_s: how long the server may still see a device online after its network was
            cut (1.5 times the devices' keep-alive, plus the sweep; 45 s for keep-alive 30).
        push_window_s: how long after an ack the fan-out and the sender's re-check may decide
            (a member who is offline for all of it must be pushed).
        t_end: when the run stopped recording; messages acked later than ``t_end -
            push_window_s`` are not judged for missing pushes. ``None``: the latest recorded time.
    """

    presence_grace_s: float = 2.0
    network_loss_s: float = 45.0
    push_window_s: float = 5.0
    t_end: float | None = None


@dataclass(frozen=True, slots=True)
class Counts:
    """What a check covered."""

    devices: int = 0
    channels: int = 0
    sends: int = 0
    acked: int = 0
    """Distinct message ids acked to senders."""
    messages: int = 0
    """Distinct message ids seen anywhere (acks and deliveries)."""
    deliveries: int = 0
    live: int = 0
    synced: int = 0
    expected: int = 0
    """(acked message, device) pairs the no-loss rule required."""
    unjudged_messages: int = 0
    """Acked messages of channels whose members were not recorded."""
    live_redeliveries: int = 0
    """Live deliveries of an id the device already had live (QoS 1 redelivery: allowed)."""
    pushes: int = 0
    push_duplicates: int = 0
    """Pushes of one message to one device after the first (allowed: docs/push.md, "The delivery window")."""
    pushes_unjudged: int = 0
    """Pushes of ids no ack named (their time of sending is unknown)."""
    push_decisions: int = 0
    """(acked message, member) pairs judged for a required push."""
    badges: int = 0
    presence: int = 0
    states: int = 0
    """(device, channel) folds compared with history's states (rich-message runs)."""
    states_unjudged: int = 0
    """(device, channel) folds not compared: the device did not hold every seq."""


@dataclass(frozen=True, slots=True)
class Verdict:
    violations: tuple[Violation, ...]
    counts: Counts
    push_checked: bool = False

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_invariant(self) -> dict[str, list[Violation]]:
        out: dict[str, list[Violation]] = defaultdict(list)
        for v in self.violations:
            out[v.invariant].append(v)
        return dict(out)

    def summary(self, *, show: int = 20) -> str:
        """What was checked, then OK or the violations (the first ``show`` of each invariant)."""
        c = self.counts
        lines = [
            f"checked {c.acked:,} acked messages and {c.deliveries:,} deliveries ({c.live:,} live, "
            f"{c.synced:,} from sync) on {c.devices:,} devices in {c.channels:,} channels: "
            f"{c.expected:,} required deliveries, {c.live_redeliveries:,} live redeliveries (allowed)",
        ]
        if self.push_checked:
            lines.append(f"push: {c.pushes:,} pushes ({c.push_duplicates:,} repeated, {c.pushes_unjudged:,} "
                         f"unjudged), {c.push_decisions:,} member decisions judged")
        lines.append(f"{c.badges:,} badges, {c.presence:,} presence views")
        if c.unjudged_messages:
            lines.append(f"{c.unjudged_messages:,} acked messages not judged for loss (channel members unknown)")
        if self.ok:
            lines.append("OK: no violation")
            return "\n".join(lines)
        lines.append(f"FAILED: {len(self.violations):,} violations")
        for name, found in sorted(self.by_invariant().items()):
            lines.append(f"  {name}: {len(found):,}")
            for v in found[:show]:
                lines.append(f"    {v.detail}  ids={','.join(_clip(v.ids))}")
            if len(found) > show:
                lines.append(f"    … {len(found) - show:,} more")
        return "\n".join(lines)


def _clip(ids: tuple[str, ...], most: int = 12) -> list[str]:
    return list(ids) if len(ids) <= most else [*ids[:most], f"…+{len(ids) - most}"]


# --- the index every rule reads ----------------------------------------------------------------


@dataclass(slots=True)
class _Message:
    """An acked message as the acks describe it."""

    channel: str
    sender: str
    cmid: str
    seq: int | None
    t_ack: float


@dataclass
class _Index:
    """Everything the rules look up, built in one pass over each list."""

    obs: Observations
    user_of: dict[str, str] = field(default_factory=dict)
    devices_of: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    acked: dict[str, _Message] = field(default_factory=dict)
    seq_ids: dict[tuple[str, int], set[str]] = field(default_factory=lambda: defaultdict(set))
    """(channel, seq) → message ids (from acks and deliveries)."""
    delivered: set[tuple[str, str]] = field(default_factory=set)
    """(device, id) for every delivery, live or sync."""
    online_until: dict[str, float] = field(default_factory=dict)
    """Device → the end of its latest connection (``inf``: still open)."""
    synced_at: dict[tuple[str, str | None], float] = field(default_factory=dict)
    """(device, channel or None for all) → the latest completed catch-up."""

    def __post_init__(self) -> None:
        obs = self.obs
        for user, devices in obs.devices_of.items():
            for d in devices:
                self.user_of[d] = user
                self.devices_of[user].add(d)
        for d in self._all_devices():
            if d not in self.user_of:
                user = d.split(":", 1)[0]
                self.user_of[d] = user
                self.devices_of[user].add(d)
        for s in obs.sends:
            if s.id is None:
                continue
            t_ack = s.t_ack if s.t_ack is not None else s.t_first
            known = self.acked.get(s.id)
            if known is None or t_ack < known.t_ack:
                self.acked[s.id] = _Message(s.channel, self.user_of[s.device], s.cmid, s.seq, t_ack)
            if s.seq is not None:
                self.seq_ids[(s.channel, s.seq)].add(s.id)
        for dv in obs.deliveries:
            self.seq_ids[(dv.channel, dv.seq)].add(dv.id)
            self.delivered.add((dv.device, dv.id))
        for o in obs.online:
            if o.how == "refused":
                continue
            end = INF if o.t_closed is None else o.t_closed
            if end > self.online_until.get(o.device, -INF):
                self.online_until[o.device] = end
        for sy in obs.syncs:
            key = (sy.device, sy.channel)
            if sy.t > self.synced_at.get(key, -INF):
                self.synced_at[key] = sy.t

    def _all_devices(self) -> Iterable[str]:
        obs = self.obs
        yield from (s.device for s in obs.sends)
        yield from (d.device for d in obs.deliveries)
        yield from (o.device for o in obs.online)
        yield from (sy.device for sy in obs.syncs)
        yield from (p.device for p in obs.pushes)
        yield from (b.device for b in obs.badges)
        yield from (p.observer for p in obs.presence)

    def expects(self, device: str, channel: str, t_ack: float) -> bool:
        """Whether ``device`` must end up holding a message of ``channel`` acked at ``t_ack``: it was
        connected at some point after the ack (live delivery, or the sync that follows every
        reconnect and ends every scenario), or it completed a catch-up that started after the ack."""
        return (self.online_until.get(device, -INF) >= t_ack
                or self.synced_at.get((device, None), -INF) >= t_ack
                or self.synced_at.get((device, channel), -INF) >= t_ack)

    def id_order(self, ids: Iterable[str]) -> list[str]:
        """Ids by their acked seq, then as strings."""
        def key(i: str) -> tuple[float, str]:
            m = self.acked.get(i)
            return (m.seq if m is not None and m.seq is not None else INF, i)
        return sorted(ids, key=key)


# --- 1. no acked message lost -------------------------------------------------------------------


def _lost(ix: _Index) -> tuple[list[Violation], int, int]:
    out: list[Violation] = []
    expected = unjudged = 0
    for mid, m in ix.acked.items():
        members = ix.obs.members.get(m.channel)
        if members is None:
            unjudged += 1
            continue
        missing = []
        for user in members:
            for d in ix.devices_of.get(user, ()):
                if ix.expects(d, m.channel, m.t_ack):
                    expected += 1
                    if (d, mid) not in ix.delivered:
                        missing.append(d)
        if missing:
            out.append(Violation(
                NO_LOSS,
                f"message {mid} (seq {m.seq} in {m.channel}, cmid {m.cmid} from {m.sender}) was acked but never "
                f"reached {len(missing)} device(s) expected to get it",
                (mid, *sorted(missing))))
    return out, expected, unjudged


def lost_messages(obs: Observations) -> list[Violation]:
    """Invariant 1. Every acked message (a Send with an id) is delivered, live or by sync, to every
    device of every member of its channel that was connected at some point after the ack or
    completed a catch-up started after it (:meth:`_Index.expects`)."""
    return _lost(_Index(obs))[0]


# --- 2. one identical, gap-free order per channel -----------------------------------------------


def _same_seq(ix: _Index) -> list[Violation]:
    out = []
    for (channel, seq), ids in sorted(ix.seq_ids.items()):
        if len(ids) > 1:
            out.append(Violation(SAME_SEQ, f"seq {seq} of {channel} carried {len(ids)} different messages",
                                 tuple(sorted(ids))))
    return out


def _gaps(ix: _Index) -> list[Violation]:
    seqs: dict[tuple[str, str], set[int]] = defaultdict(set)
    for dv in ix.obs.deliveries:
        seqs[(dv.device, dv.channel)].add(dv.seq)
    runs: dict[tuple[str, int, int], list[str]] = defaultdict(list)
    for (device, channel), held in seqs.items():
        lo, hi = min(held), max(held)
        if hi - lo + 1 == len(held):
            continue
        start: int | None = None
        for s in range(lo, hi + 2):
            if s not in held and s <= hi:
                if start is None:
                    start = s
            elif start is not None:
                runs[(channel, start, s - 1)].append(device)
                start = None
    out = []
    for (channel, a, b), devices in sorted(runs.items()):
        ids = [i for s in range(a, b + 1) for i in sorted(ix.seq_ids.get((channel, s), ()))]
        span = f"seq {a}" if a == b else f"seqs {a}..{b}"
        out.append(Violation(GAP, f"{span} of {channel} missing on {len(devices)} device(s) after the final sync",
                             (*ids, *sorted(devices))))
    return out


def _reorders(ix: _Index) -> tuple[list[Violation], int]:
    top: dict[tuple[str, str], tuple[int, str]] = {}
    seen_live: set[tuple[str, str]] = set()
    redeliveries = 0
    found: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    late_seq: dict[tuple[str, str, str], tuple[int, int]] = {}
    live = sorted((dv for dv in ix.obs.deliveries if dv.via == "live"), key=lambda dv: dv.t)
    for dv in live:
        if (dv.device, dv.id) in seen_live:
            redeliveries += 1
            continue
        seen_live.add((dv.device, dv.id))
        key = (dv.device, dv.channel)
        best = top.get(key)
        if best is None or dv.seq > best[0]:
            top[key] = (dv.seq, dv.id)
        elif dv.seq < best[0]:
            k = (dv.channel, dv.id, best[1])
            found[k].append(dv.device)
            late_seq[k] = (dv.seq, best[0])
        # dv.seq == best[0] with another id: a seq carrying two messages (order.same_seq)
    out = []
    for (channel, late, prev), devices in sorted(found.items()):
        a, b = late_seq[(channel, late, prev)]
        out.append(Violation(REORDER, f"seq {a} of {channel} arrived live after seq {b} on {len(devices)} "
                                      f"device(s)", (late, prev, *sorted(devices))))
    return out, redeliveries


def order_violations(obs: Observations) -> list[Violation]:
    """Invariant 2. Per channel, a seq names one message everywhere (acks and every device); each
    device holds every seq between its lowest and highest of the channel (live or sync, judged at
    the end, after the final sync); live deliveries come in increasing seq per device and channel
    (an id received live again is a QoS 1 redelivery, counted, not judged)."""
    ix = _Index(obs)
    return [*_same_seq(ix), *_gaps(ix), *_reorders(ix)[0]]


# --- 3. no duplicates ---------------------------------------------------------------------------


def _dedup(ix: _Index) -> list[Violation]:
    by_cmid: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    seqs_of: dict[str, set[int]] = defaultdict(set)
    origin_of: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
    for s in ix.obs.sends:
        key = (s.channel, ix.user_of[s.device], s.cmid)
        ids = set(s.ack_ids)
        if s.id is not None:
            ids.add(s.id)
        by_cmid[key] |= ids
        for i in ids:
            origin_of[i].add(key)
        if s.id is not None and s.seq is not None:
            seqs_of[s.id].add(s.seq)
    for dv in ix.obs.deliveries:
        seqs_of[dv.id].add(dv.seq)
        if dv.cmid is not None:
            key = (dv.channel, dv.sender, dv.cmid)
            by_cmid[key].add(dv.id)
            origin_of[dv.id].add(key)
    out = []
    for (channel, sender, cmid), ids in sorted(by_cmid.items()):
        if len(ids) > 1:
            out.append(Violation(DEDUP_CMID, f"cmid {cmid} of {sender} in {channel} became {len(ids)} messages",
                                 (cmid, *ix.id_order(ids))))
    for mid in sorted(seqs_of.keys() | origin_of.keys()):
        seqs, origins = seqs_of.get(mid, set()), origin_of.get(mid, set())
        if len(seqs) > 1:
            out.append(Violation(DEDUP_ID, f"message {mid} had seqs {sorted(seqs)}", (mid,)))
        if len(origins) > 1:
            shown = ", ".join(f"{c}/{u}/{k}" for c, u, k in sorted(origins))
            out.append(Violation(DEDUP_ID, f"message {mid} came from several (channel, sender, cmid): {shown}",
                                 (mid,)))
    return out


def duplicate_violations(obs: Observations) -> list[Violation]:
    """Invariant 3. One ``(channel, sender user, cmid)`` → one message id across every ack (retries
    and other devices of the sender included) and delivery; one id → one seq and one origin. The
    key is the sender's user, as the server deduplicates (docs/protocol.md, *Retries*)."""
    return _dedup(_Index(obs))


# --- 4. push iff offline ------------------------------------------------------------------------


class _Intervals:
    """Merged, sorted, disjoint closed intervals."""

    def __init__(self, spans: Iterable[tuple[float, float]]) -> None:
        merged: list[list[float]] = []
        for a, b in sorted(s for s in spans if s[0] <= s[1]):
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.starts = [m[0] for m in merged]
        self.ends = [m[1] for m in merged]

    def _last_starting_by(self, t: float) -> int:
        return bisect.bisect_right(self.starts, t) - 1

    def covers(self, a: float, b: float) -> bool:
        i = self._last_starting_by(a)
        return i >= 0 and self.ends[i] >= b

    def meets(self, a: float, b: float) -> bool:
        i = self._last_starting_by(b)
        return i >= 0 and self.ends[i] >= a


def _presence_views(ix: _Index, limits: Limits) -> tuple[dict[str, _Intervals], dict[str, _Intervals]]:
    """Per user: when the server surely saw one of its devices online (connected for at least the
    grace, until it disconnected), and when it may have (from a grace before the CONNACK until the
    grace, or the network-loss detection time, after the end)."""
    sure: dict[str, list[tuple[float, float]]] = defaultdict(list)
    maybe: dict[str, list[tuple[float, float]]] = defaultdict(list)
    g = limits.presence_grace_s
    for o in ix.obs.online:
        if o.how == "refused":
            continue
        user = ix.user_of[o.device]
        end = INF if o.t_closed is None else o.t_closed
        sure[user].append((o.t_connected + g, end))
        maybe[user].append((o.t_connected - g, end + (limits.network_loss_s if o.how == "network_loss" else g)))
    return ({u: _Intervals(s) for u, s in sure.items()}, {u: _Intervals(s) for u, s in maybe.items()})


def _t_end(obs: Observations) -> float:
    times = [s.t_ack for s in obs.sends if s.t_ack is not None]
    times += [s.t_first for s in obs.sends]
    times += [d.t for d in obs.deliveries] + [p.t for p in obs.pushes] + [b.t for b in obs.badges]
    times += [sy.t for sy in obs.syncs] + [o.t_connected for o in obs.online]
    times += [o.t_closed for o in obs.online if o.t_closed is not None]
    return max(times, default=-INF)


def _push(ix: _Index, limits: Limits) -> tuple[list[Violation], int, int, int]:
    obs = ix.obs
    sure, maybe = _presence_views(ix, limits)
    nothing = _Intervals(())
    out: list[Violation] = []

    # Pushes the rules forbid.
    seen: set[tuple[str, str]] = set()
    duplicates = unjudged = 0
    wrong: dict[tuple[str, str], list[str]] = defaultdict(list)
    for p in obs.pushes:
        if (p.device, p.id) in seen:
            duplicates += 1
            continue
        seen.add((p.device, p.id))
        m = ix.acked.get(p.id)
        if m is None:
            unjudged += 1
            continue
        user = ix.user_of[p.device]
        members = obs.members.get(m.channel)
        if user == m.sender:
            why = "to the sender's own device"
        elif members is not None and user not in members:
            why = f"to a non-member of {m.channel}"
        elif (user, m.channel) in obs.muted:
            why = f"though {user} muted {m.channel}"
        elif sure.get(user, nothing).covers(m.t_ack, max(m.t_ack, p.t)):
            why = f"though {user} was online from the ack to the push"
        else:
            continue
        wrong[(p.id, why)].append(p.device)
    for (mid, why), devices in sorted(wrong.items()):
        out.append(Violation(PUSH_UNEXPECTED, f"message {mid} pushed {why}", (mid, *sorted(devices))))

    # Pushes the rules require: a member other than the sender, not muted, whom the server cannot
    # have seen online in the decision window, gets one on every registered device.
    t_end = limits.t_end if limits.t_end is not None else _t_end(obs)
    decisions = 0
    for mid, m in ix.acked.items():
        members = obs.members.get(m.channel)
        if members is None or m.t_ack + limits.push_window_s > t_end:
            continue
        missing = []
        for user in members:
            if user == m.sender or (user, m.channel) in obs.muted:
                continue
            decisions += 1
            if maybe.get(user, nothing).meets(m.t_ack, m.t_ack + limits.push_window_s):
                continue
            for d in ix.devices_of.get(user, ()):
                if (obs.push_devices is None or d in obs.push_devices) and (d, mid) not in seen:
                    missing.append(d)
        if missing:
            out.append(Violation(PUSH_MISSING, f"message {mid} (seq {m.seq} in {m.channel}) was never pushed to "
                                               f"{len(missing)} device(s) of offline members", (mid, *sorted(missing))))
    return out, duplicates, unjudged, decisions


def push_violations(obs: Observations, limits: Limits | None = None) -> list[Violation]:
    """Invariant 4, only when ``obs.push_expected`` (docs/push.md, *Fan-out decisions*). Presence is
    per user: any device online (or away) means no push to any of the user's devices.

    - A push is wrong when it goes to the sender, to a non-member, to a member who muted the
      channel, or to a user the server surely saw online from the ack to the push (a device
      connected at least ``presence_grace_s`` before the ack and still connected at the push).
    - A push is missing when a member other than the sender, not muted, had no device the server
      may have seen online from the ack until ``push_window_s`` after it (each connection widened by
      the grace, a lost one by ``network_loss_s``), and a registered device of theirs never got one.
    Pushes of ids no ack named are not judged; repeats are counted (they are allowed)."""
    if not obs.push_expected:
        return []
    return _push(_Index(obs), limits or Limits())[0]


# --- 5, 6. badges and presence ------------------------------------------------------------------


def badge_violations(obs: Observations) -> list[Violation]:
    """Invariant 5 (unread counts cannot drift): every badge shown equals the formula's value the
    device computed at that moment (docs/protocol.md, *Unread counts*)."""
    return [Violation(BADGE, f"{b.device} was shown {b.shown} unread in {b.channel}, the formula gives {b.expected}",
                      (b.device, b.channel))
            for b in obs.badges if b.shown != b.expected]


def presence_violations(obs: Observations) -> list[Violation]:
    """Invariant 6 (presence converges): at the end every observer holds each watched user's true status."""
    return [Violation(PRESENCE, f"{p.observer} shows {p.user} {p.status}, but the user is {p.actual}",
                      (p.observer, p.user))
            for p in obs.presence if p.status != p.actual]


def state_violations(obs: Observations) -> tuple[list[Violation], int, int]:
    """Invariant 7 (state = fold(events)): every device that holds a channel's whole stream shows
    each message exactly as history's ``state`` does (edits, deletes, reactions with counts and
    ``me``, reply counts, pins). Returns the violations, the folds compared and those skipped."""
    out: list[Violation] = []
    compared = unjudged = 0
    for (device, channel), seen in sorted(obs.device_states.items()):
        truth = obs.history_states.get(channel)
        if truth is None or seen.last_seq != truth.last_seq:
            unjudged += 1
            continue
        compared += 1
        differ = sorted(s for s in truth.states.keys() | seen.states.keys()
                        if truth.states.get(s) != seen.states.get(s))
        if differ:
            s = differ[0]
            out.append(Violation(STATE, f"{device} folds {len(differ)} message(s) of {channel} unlike history; "
                                 f"seq {s}: device {seen.states.get(s)} vs history {truth.states.get(s)}",
                                 (device, channel)))
    return out, compared, unjudged


# --- all of them ---------------------------------------------------------------------------------


def check(obs: Observations, limits: Limits | None = None) -> Verdict:
    """Every invariant over one run; the run passes when the verdict has no violation."""
    limits = limits or Limits()
    ix = _Index(obs)
    lost, expected, unjudged = _lost(ix)
    reorders, redeliveries = _reorders(ix)
    violations = [*lost, *_same_seq(ix), *_gaps(ix), *reorders, *_dedup(ix)]
    duplicates = pushes_unjudged = decisions = 0
    if obs.push_expected:
        pushed, duplicates, pushes_unjudged, decisions = _push(ix, limits)
        violations += pushed
    violations += [*badge_violations(obs), *presence_violations(obs)]
    states, states_compared, states_unjudged = state_violations(obs)
    violations += states
    live = sum(1 for d in obs.deliveries if d.via == "live")
    counts = Counts(
        devices=len(ix.user_of),
        channels=len(obs.members.keys() | {d.channel for d in obs.deliveries} | {s.channel for s in obs.sends}),
        sends=len(obs.sends), acked=len(ix.acked),
        messages=len(ix.acked.keys() | {d.id for d in obs.deliveries}),
        deliveries=len(obs.deliveries), live=live, synced=len(obs.deliveries) - live,
        expected=expected, unjudged_messages=unjudged, live_redeliveries=redeliveries,
        pushes=len(obs.pushes), push_duplicates=duplicates, pushes_unjudged=pushes_unjudged,
        push_decisions=decisions, badges=len(obs.badges), presence=len(obs.presence),
        states=states_compared, states_unjudged=states_unjudged,
    )
    return Verdict(tuple(violations), counts, push_checked=obs.push_expected)
