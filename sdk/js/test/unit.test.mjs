// Pure policy: backoff, the reconnect decision table, the outbox, gap and epoch detection.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  ChannelFold, ChannelTracker, MAX_REACTION_EMOJI, MemoryStorage, MqchatError, Outbox, applyEvent, backoffBound,
  backoffDelay, classify, classifyIncoming, decide, dueEntries, errorInfo, fold, parseTopic, refreshDelay, stateOut,
  tokenExpired, topics, connId, heartbeatInterval, presencePayload, willPayload,
} from "../dist/index.js";

const policy = { baseMs: 500, capMs: 30_000, maxAttempts: 0 };

test("backoff bound doubles from the base and stops at the cap", () => {
  assert.deepEqual([0, 1, 2, 3].map((a) => backoffBound(a, policy)), [500, 1000, 2000, 4000]);
  assert.equal(backoffBound(6, policy), 30_000);
  assert.equal(backoffBound(5000, policy), 30_000); // no overflow to Infinity/NaN
});

test("full jitter spans [0, bound) and is clamped", () => {
  assert.equal(backoffDelay(3, 0, policy), 0);
  assert.equal(backoffDelay(3, 0.5, policy), 2000);
  assert.ok(backoffDelay(3, 0.999, policy) < 4000);
  assert.equal(backoffDelay(3, 7, policy), 4000);
  assert.equal(backoffDelay(3, -1, policy), 0);
});

test("decision table: terminal CONNACK codes stop", () => {
  for (const f of ["protocol", "identifier_rejected"]) {
    const d = decide(f, { attempt: 0, tokenExpired: true, relogged: false, rand: 0.5, backoff: policy });
    assert.equal(d.action, "stop", f);
  }
});

test("decision table: refused credentials re-login only with an expired token, once", () => {
  for (const f of ["bad_credentials", "not_authorized"]) {
    assert.deepEqual(decide(f, { attempt: 0, tokenExpired: true, relogged: false, rand: 0, backoff: policy }),
      { action: "relogin" });
    assert.equal(decide(f, { attempt: 0, tokenExpired: false, relogged: false, rand: 0, backoff: policy }).action, "stop");
    assert.equal(decide(f, { attempt: 0, tokenExpired: true, relogged: true, rand: 0, backoff: policy }).action, "stop");
  }
});

test("decision table: the network and an unavailable server retry with jittered backoff", () => {
  for (const f of ["server_unavailable", "connection_refused", "connection_lost", "timeout"]) {
    assert.deepEqual(decide(f, { attempt: 2, tokenExpired: false, relogged: false, rand: 0.5, backoff: policy }),
      { action: "retry", delayMs: 1000 });
  }
  const limited = { ...policy, maxAttempts: 3 };
  assert.equal(decide("timeout", { attempt: 1, tokenExpired: false, relogged: false, rand: 0, backoff: limited }).action, "retry");
  assert.equal(decide("timeout", { attempt: 2, tokenExpired: false, relogged: false, rand: 0, backoff: limited }).action, "stop");
});

test("classify maps CONNACK codes and network errors", () => {
  assert.equal(classify({ code: 5 }), "not_authorized");
  assert.equal(classify({ code: 4 }), "bad_credentials");
  assert.equal(classify({ code: 3 }), "server_unavailable");
  assert.equal(classify({ code: 1 }), "protocol");
  assert.equal(classify({ code: 99 }), "protocol");
  assert.equal(classify({ code: "ECONNREFUSED" }), "connection_refused");
  assert.equal(classify(new Error("socket hang up")), "connection_lost");
  assert.equal(classify(null), "connection_lost");
});

test("a token counts as expired a minute before exp", () => {
  assert.equal(tokenExpired(1000, 1000_000 - 60_001), false);
  assert.equal(tokenExpired(1000, 1000_000 - 60_000), true);
});

test("error table: actions per code, unknown codes are never retried", () => {
  assert.equal(errorInfo("unavailable").action, "retry");
  assert.equal(errorInfo("not_member").action, "drop");
  assert.equal(errorInfo("token_expired").action, "relogin");
  assert.equal(errorInfo("something_new").action, "fix");
  const e = new MqchatError("unavailable", "later", { status: 503, retryAfterMs: 1000 });
  assert.equal(e.retryable, true);
  assert.equal(new MqchatError("body_too_long", "x").retryable, false);
});

test("outbox: due entries are the unsent and the overdue, oldest first", () => {
  const e = (cmid, createdMs, sentMs) => ({ cmid, channel: "c", payload: {}, createdMs, sentMs, attempts: 0 });
  const due = dueEntries([e("b", 2, 9_000), e("a", 1, 0), e("c", 3, 4_000)], 10_000, 5_000);
  assert.deepEqual(due.map((x) => x.cmid), ["a", "c"]);
});

test("outbox: entries survive a restart through the storage, with their cmid", async () => {
  const storage = new MemoryStorage();
  const first = new Outbox(storage, "k");
  await first.load();
  await first.add({ cmid: "dev-1", channel: "c1", payload: { cmid: "dev-1", kind: "text", body: "hi" }, createdMs: 1,
    sentMs: 0, attempts: 0 });
  first.markSent("dev-1", 5);
  const second = new Outbox(storage, "k");
  await second.load();
  assert.deepEqual(second.all().map((x) => [x.cmid, x.payload.body]), [["dev-1", "hi"]]);
  await second.remove("dev-1");
  assert.equal(storage.getItem("k"), null);
  const broken = new MemoryStorage();
  broken.setItem("k", "{not json");
  const third = new Outbox(broken, "k");
  await third.load();
  assert.equal(third.size, 0);
});

const msg = (seq, epoch = 1, channel = "c1") => ({ id: String(seq), seq, epoch, channel, sender: "u", device: "d",
  cmid: `m${seq}`, ts: seq, kind: "text", body: `b${seq}`, v: 1 });

test("classifyIncoming: append, duplicate, gap, reset, unknown", () => {
  const c = { epoch: 1, lastSeq: 5 };
  assert.equal(classifyIncoming(c, msg(6)), "append");
  assert.equal(classifyIncoming(c, msg(5)), "duplicate");
  assert.equal(classifyIncoming(c, msg(2)), "duplicate");
  assert.equal(classifyIncoming(c, msg(8)), "gap");
  assert.equal(classifyIncoming(c, msg(6, 2)), "reset");
  assert.equal(classifyIncoming(undefined, msg(1)), "unknown");
});

test("tracker: a gap holds later messages until the sync fills it", () => {
  const t = new ChannelTracker();
  t.applySync({ channel: "c1", status: "new", epoch: 1, last_seq: 2, has_more: false, messages: [msg(1), msg(2)] });
  t.endSync("c1");
  assert.deepEqual(t.offer(msg(3)).deliver.map((m) => m.seq), [3]);
  assert.deepEqual(t.offer(msg(3)), { deliver: [], needSync: false }); // duplicate
  assert.deepEqual(t.offer(msg(6)), { deliver: [], needSync: true });
  assert.deepEqual(t.offer(msg(7)), { deliver: [], needSync: false }); // already syncing: held
  const applied = t.applySync({ channel: "c1", status: "ok", epoch: 1, last_seq: 7, has_more: false,
    messages: [msg(4), msg(5), msg(6)] });
  assert.deepEqual(applied.deliver.map((m) => m.seq), [4, 5, 6]);
  const after = t.endSync("c1");
  assert.deepEqual(after.deliver.map((m) => m.seq), [7]);
  assert.equal(after.needSync, false);
  assert.deepEqual(t.cursor("c1"), { epoch: 1, lastSeq: 7 });
});

test("tracker: a sync that stops short leaves the gap open", () => {
  const t = new ChannelTracker();
  t.applySync({ channel: "c1", status: "new", epoch: 1, last_seq: 1, has_more: false, messages: [msg(1)] });
  t.endSync("c1");
  t.offer(msg(4));
  t.applySync({ channel: "c1", status: "ok", epoch: 1, last_seq: 2, has_more: false, messages: [msg(2)] });
  assert.equal(t.endSync("c1").needSync, true);
});

test("tracker: a new epoch replaces the channel's messages", () => {
  const t = new ChannelTracker();
  t.applySync({ channel: "c1", status: "new", epoch: 1, last_seq: 9, has_more: false, messages: [msg(9)] });
  t.endSync("c1");
  assert.equal(t.offer(msg(1, 2)).needSync, true);
  const applied = t.applySync({ channel: "c1", status: "reset", epoch: 2, last_seq: 1, has_more: false,
    messages: [msg(1, 2)] });
  assert.deepEqual(applied.replace.map((m) => [m.epoch, m.seq]), [[2, 1]]);
  assert.deepEqual(t.endSync("c1").deliver, []);
  assert.deepEqual(t.cursor("c1"), { epoch: 2, lastSeq: 1 });
  assert.deepEqual(t.offer(msg(2, 2)).deliver.map((m) => m.seq), [2]);
});

test("topics parse back to what they are", () => {
  assert.deepEqual(parseTopic("ch/c1"), { kind: "channel", channel: "c1" });
  assert.deepEqual(parseTopic("typing/c1/u2"), { kind: "typing", channel: "c1", user: "u2" });
  assert.deepEqual(parseTopic("presence/u2"), { kind: "userPresence", user: "u2" });
  assert.deepEqual(parseTopic("dev/u/d/ack"), { kind: "ack" });
  assert.equal(parseTopic("presence/u2/d"), null);
});

test("tracker: after an abandoned sync, the next message past the gap asks again", () => {
  const t = new ChannelTracker();
  t.applySync({ channel: "c1", status: "new", epoch: 1, last_seq: 1, has_more: false, messages: [msg(1)] });
  t.endSync("c1");
  assert.equal(t.offer(msg(3)).needSync, true);
  t.abandonSync("c1"); // the fill failed
  assert.deepEqual(t.offer(msg(4)), { deliver: [], needSync: true });
  t.applySync({ channel: "c1", status: "ok", epoch: 1, last_seq: 4, has_more: false, messages: [msg(2)] });
  assert.deepEqual(t.endSync("c1").deliver.map((m) => m.seq), [3, 4]);
});

// ---- the fold (mirrors mqchat/fold.py and tests/ of it) --------------------------------------------

let seqNo = 0;
const ev = (kind, fields = {}) => ({
  id: String(++seqNo), seq: seqNo, epoch: 1, channel: "c1", sender: "u1", device: "d", cmid: `m${seqNo}`,
  ts: 1000 + seqNo, kind, body: "", target: null, emoji: null, op: null, reply_to: null, thread: null,
  count_seq: 0, v: 1, ...fields,
});

function script() {
  seqNo = 0;
  return [
    ev("text", { body: "root" }),                                            // 1
    ev("text", { body: "reply", sender: "u2", thread: 1 }),                  // 2
    ev("reaction", { target: 1, emoji: "👍", op: "add", sender: "u2" }),     // 3
    ev("reaction", { target: 1, emoji: ":x:", op: "add" }),                  // 4
    ev("reaction", { target: 1, emoji: "👍", op: "add" }),                   // 5
    ev("reaction", { target: 1, emoji: ":x:", op: "remove", sender: "u2" }), // 6: not u2's: nothing
    ev("edit", { target: 1, body: "root!" }),                                // 7
    ev("pin", { target: 1 }),                                                // 8
    ev("delete", { target: 2, sender: "u2" }),                               // 9
    ev("edit", { target: 2, body: "back?" }),                                // 10: deleted: nothing
    ev("reaction", { target: 1, emoji: ":x:", op: "remove" }),               // 11
    ev("pin", { target: 42 }),                                               // 12: no such message
  ];
}

test("fold: the table of docs/protocol.md, event by event", () => {
  const s = fold(script());
  assert.deepEqual(stateOut(s.get(1), "u1"), {
    body: "root!", edited_ts: 1007, deleted: false, pinned: true, reactions: [{ emoji: "👍", count: 2, me: true }],
    reply_count: 1, last_reply_ts: 1002,
  });
  assert.deepEqual(stateOut(s.get(2), "u2"), {
    body: "", edited_ts: null, deleted: true, pinned: false, reactions: [], reply_count: 0, last_reply_ts: null,
  });
  assert.equal(s.size, 2, "events are not messages");
  assert.equal(stateOut(s.get(1), "u3").reactions[0].me, false);
});

test("fold: a prefix then the rest equals everything at once, at every cut", () => {
  const events = script();
  const whole = fold(events);
  for (let cut = 0; cut <= events.length; cut++) {
    const parts = fold(events.slice(cut), fold(events.slice(0, cut)));
    assert.deepEqual([...parts.entries()].map(([k, v]) => [k, stateOut(v, "u1")]),
      [...whole.entries()].map(([k, v]) => [k, stateOut(v, "u1")]), `cut at ${cut}`);
  }
});

test("fold: at most 20 distinct emoji; a known one may still be added; a delete clears them", () => {
  seqNo = 0;
  const states = fold([ev("text", { body: "hi" })]);
  for (let i = 0; i < MAX_REACTION_EMOJI + 1; i++) {
    applyEvent(states, ev("reaction", { target: 1, emoji: `:e${i}:`, op: "add" }));
  }
  assert.equal(states.get(1).reactions.length, MAX_REACTION_EMOJI);
  assert.deepEqual(applyEvent(states, ev("reaction", { target: 1, emoji: ":e0:", op: "add", sender: "u9" })), [1]);
  assert.equal(stateOut(states.get(1), "u9").reactions[0].count, 2);
  assert.deepEqual(applyEvent(states, ev("delete", { target: 1 })), [1]);
  assert.deepEqual(states.get(1).reactions, []);
  assert.deepEqual(applyEvent(states, ev("reaction", { target: 1, emoji: ":e0:", op: "add" })), []);
});

test("ChannelFold: a window folds like the whole; an older page prepended refolds; a gap restarts it", () => {
  const events = script();
  const f = new ChannelFold();
  f.reset(events.slice(6));
  assert.deepEqual(f.view("u1"), [], "events whose targets are not held change nothing");
  assert.equal(f.prepend(events.slice(0, 3)), false, "a page that does not end at the window is refused");
  assert.equal(f.prepend(events.slice(0, 6)), true);
  const whole = fold(events);
  assert.deepEqual(f.view("u1").map((v) => [v.message.seq, v.state]),
    [1, 2].map((seq) => [seq, stateOut(whole.get(seq), "u1")]));
  assert.deepEqual(f.append(ev("reaction", { target: 1, emoji: "🎉", op: "add" })), [1]);
  assert.deepEqual(f.append(events[0]), [], "a duplicate changes nothing");
  const far = ev("text", { body: "after a gap", seq: 99 });
  assert.deepEqual(f.append(far), [99]);
  assert.deepEqual(f.view("u1").map((v) => v.message.seq), [99]);
});

test("refresh timing: five minutes early, or at 80 % of a short token's life", () => {
  assert.equal(refreshDelay(3_600_000), 3_300_000);
  assert.equal(refreshDelay(60_000), 48_000);
  assert.equal(refreshDelay(-5), 0);
  assert.equal(topics.auth("u1", "d1"), "auth/u1/d1");
});

test("error table: the codes of rich messages, servers, search and tokens", () => {
  for (const [code, action] of [["target_deleted", "drop"], ["invalid_emoji", "fix"], ["slow_mode", "retry"],
    ["timed_out", "drop"], ["refresh_reused", "relogin"], ["token_revoked", "relogin"], ["rate_limited", "retry"],
    ["invite_used_up", "drop"], ["empty_query", "fix"], ["role_hierarchy", "fix"]]) {
    assert.equal(errorInfo(code).action, action, code);
  }
});

test("presence: a connection id is 12 hex digits, fresh each time, and a valid topic id", () => {
  const ids = new Set(Array.from({ length: 200 }, () => connId()));
  assert.equal(ids.size, 200);
  for (const id of ids) assert.match(id, /^[0-9a-f]{12}$/);
  assert.equal(connId((n) => new Uint8Array(n).fill(0xab)), "abababababab");
  assert.equal(connId((n) => Uint8Array.from({ length: n }, (_, i) => i)), "000102030405");
});

test("presence: will, status and offline payloads name the connection (docs/protocol.md)", () => {
  assert.deepEqual(JSON.parse(willPayload("0a1b2c3d4e5f")), { status: "offline", ts: 0, conn: "0a1b2c3d4e5f" });
  assert.deepEqual(JSON.parse(presencePayload("online", "c1", 1700000000123)),
    { status: "online", ts: 1700000000123, conn: "c1" });
  assert.deepEqual(JSON.parse(presencePayload("away", "c1", 5)), { status: "away", ts: 5, conn: "c1" });
  assert.deepEqual(JSON.parse(presencePayload("offline", "c2", 9)), { status: "offline", ts: 9, conn: "c2" });
});

test("presence: the heartbeat runs only when the login asks for it", () => {
  assert.equal(heartbeatInterval(10_000), 10_000);
  assert.equal(heartbeatInterval(null), null);
  assert.equal(heartbeatInterval(undefined), null);
  assert.equal(heartbeatInterval(0), null);
  assert.equal(heartbeatInterval(-5), null);
  assert.equal(heartbeatInterval(Number.NaN), null);
});
