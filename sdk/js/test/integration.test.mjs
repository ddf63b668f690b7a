// The SDK against a real running system: two clients sign up, create a channel, exchange messages,
// see acks, typing and presence; a dropped connection reconnects by the table and sync fills the gap.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { ChannelTracker, MemoryStorage, MqchatClient, MqchatError } from "../dist/index.js";
import { startSystem, uniqueName, waitFor } from "./system.mjs";

let system;
before(async () => { system = await startSystem(); });
after(async () => { await system?.stop(); });

/** A client that records everything it sees. */
function recorder(client) {
  const seen = { messages: [], resets: [], acks: [], states: [], typing: [], presence: [], unread: new Map(),
    membership: [] };
  client.on("message", (m) => seen.messages.push(m));
  client.on("reset", (r) => seen.resets.push(r));
  client.on("ack", (a) => seen.acks.push(a));
  client.on("state", (s) => seen.states.push(s));
  client.on("typing", (t) => seen.typing.push(t));
  client.on("presence", (p) => seen.presence.push(p));
  client.on("unread", (u) => seen.unread.set(u.channel, u));
  client.on("membership", (m) => seen.membership.push(m));
  return seen;
}

async function account(name, opts = {}) {
  const client = new MqchatClient({ apiUrl: system.api, deviceId: "node1", ...opts });
  const username = uniqueName(name);
  await client.signup(username, "correct horse battery");
  await client.login(username, "correct horse battery");
  return { client, seen: recorder(client), username };
}

test("two clients chat, lose the connection, and recover every message once, in order", async (t) => {
  const alice = await account("alice");
  // Bob reconnects after ~1.5 s: long enough to miss messages while he is away.
  const bob = await account("bob", { backoff: { baseMs: 1500, capMs: 1500 }, random: () => 0.99 });
  t.after(async () => { await alice.client.disconnect(); await bob.client.disconnect(); });

  const channel = await alice.client.createChannel("group", [bob.client.userId], "team");
  await alice.client.connect();
  await bob.client.connect();
  assert.equal(bob.client.state, "connected");
  assert.deepEqual(bob.seen.resets.map((r) => [r.channel, r.status]), [[channel, "new"]]);

  const ack = await alice.client.send(channel, "hello bob");
  assert.equal(ack.ok, true);
  assert.equal(ack.seq, 1);
  assert.match(ack.id, /^\d+$/);
  await waitFor(() => bob.seen.messages.length === 1, { what: "bob's first message" });
  assert.equal(bob.seen.messages[0].body, "hello bob");
  assert.equal(bob.seen.messages[0].sender, alice.client.userId);
  assert.equal(bob.client.unread(channel), 1);

  // The network goes away under bob; alice keeps talking.
  bob.client.dropConnection();
  await waitFor(() => bob.client.state === "reconnecting", { what: "bob reconnecting" });
  const lost = bob.seen.states.find((s) => s.state === "reconnecting");
  assert.equal(lost.failure, "connection_lost");
  assert.ok(lost.delayMs > 1000 && lost.delayMs < 1500, `delay ${lost.delayMs}`);
  const acks = await Promise.all(["one", "two", "three"].map((b) => alice.client.send(channel, b)));
  assert.deepEqual(acks.map((a) => a.seq).sort(), [2, 3, 4]);
  assert.equal(bob.client.state, "reconnecting", "the messages were sent while bob was away");

  await waitFor(() => bob.seen.messages.length === 4, { what: "bob's missed messages" });
  assert.equal(bob.client.state, "connected");
  assert.deepEqual(bob.seen.messages.map((m) => m.seq), [1, 2, 3, 4]);
  assert.equal(bob.client.unread(channel), 4);

  // Read markers: bob reads; every device of his is told; the count is the server's.
  const read = await bob.client.markRead(channel);
  assert.equal(read.unread, 0);
  assert.equal(read.seq, 4);
  await waitFor(() => bob.seen.unread.get(channel)?.unread === 0, { what: "bob's unread at 0" });

  // Bob replies; alice sees it live, and her own messages never count as unread.
  await bob.client.send(channel, `thanks <@${alice.client.userId}>`);
  await waitFor(() => alice.seen.messages.length === 5, { what: "alice sees bob's reply" });
  assert.deepEqual(alice.seen.messages.map((m) => m.seq), [1, 2, 3, 4, 5]);
  assert.equal(alice.client.unread(channel), 1);
  assert.equal(alice.seen.unread.get(channel).mentions, 1);
});

test("typing and presence reach the other user; a clean disconnect says offline", async (t) => {
  const alice = await account("alice");
  const bob = await account("bob");
  t.after(async () => { await alice.client.disconnect(); });
  const channel = await alice.client.createChannel("direct", [bob.client.userId]);
  await alice.client.connect();
  await bob.client.connect();

  bob.client.watchTyping(channel);
  alice.client.watchPresence([bob.client.userId]);
  await waitFor(() => alice.seen.presence.some((p) => p.user === bob.client.userId && p.status === "online"),
    { what: "bob online" });
  // Subscriptions are asynchronous: keep typing (refreshed at most every 3 s) until bob sees it.
  await waitFor(() => {
    alice.client.setTyping(channel, true);
    return bob.seen.typing.some((x) => x.channel === channel && x.user === alice.client.userId && x.typing);
  }, { what: "bob sees alice typing" });
  alice.client.setTyping(channel, false);
  await waitFor(() => bob.seen.typing.at(-1)?.typing === false, { what: "alice stopped typing" });

  await bob.client.disconnect();
  assert.equal(bob.client.state, "idle");
  await waitFor(() => alice.seen.presence.at(-1)?.status === "offline", { what: "bob offline" });
});

test("the outbox keeps a send across a restart and retries it with the same cmid", async (t) => {
  const storage = new MemoryStorage();
  const first = await account("carol", { storage });
  const channel = await first.client.createChannel("group", [], "notes");
  // Not connected: the send waits in the outbox (persisted), as it would with no network.
  const never = first.client.send(channel, "written offline", { cmid: "carol-offline-1" });
  never.catch(() => undefined);
  assert.deepEqual(first.client.pendingSends().map((p) => p.cmid), ["carol-offline-1"]);

  // The app restarts: a new client on the same storage finds the send and delivers it.
  const again = new MqchatClient({ apiUrl: system.api, deviceId: "node1", storage });
  const seen = recorder(again);
  await again.login(first.username, "correct horse battery");
  t.after(() => again.disconnect());
  await again.connect();
  await waitFor(() => seen.acks.length === 1, { what: "the ack of the restored send" });
  assert.equal(seen.acks[0].cmid, "carol-offline-1");
  assert.equal(seen.acks[0].ok, true);
  await waitFor(() => seen.messages.length === 1, { what: "the message on the stream" });
  assert.equal(seen.messages[0].cmid, "carol-offline-1");
  assert.deepEqual(again.pendingSends(), []);

  // Resending the same cmid is idempotent: the same id and seq come back.
  const dup = await again.send(channel, "written offline", { cmid: "carol-offline-1" });
  assert.equal(dup.seq, seen.acks[0].seq);
  assert.equal(dup.id, seen.acks[0].id);
});

test("refusals carry the error table's codes", async () => {
  const dave = await account("dave");
  await assert.rejects(dave.client.api.login(dave.username, "wrong password!", "node1"),
    (e) => e instanceof MqchatError && e.code === "bad_credentials" && e.status === 401);
  await assert.rejects(dave.client.history("cNoSuchChannel"), (e) => e.code === "channel_not_found");
  await dave.client.connect();
  try {
    await assert.rejects(dave.client.send("cNoSuchChannel", "hi"), (e) => e.code === "not_member" && e.action === "drop");
    await assert.rejects(dave.client.send("cNoSuchChannel", "x".repeat(4001)), (e) => e.code === "body_too_long");
  } finally {
    await dave.client.disconnect();
  }
});

test("a refused token stops the client instead of retrying", async () => {
  const erin = await account("erin");
  const client = new MqchatClient({ apiUrl: system.api, deviceId: "node2" });
  const login = await client.api.login(erin.username, "correct horse battery", "node2");
  await client.useSession({ ...login, token: `${login.token.slice(0, -4)}AAAA` });
  const states = [];
  client.on("state", (s) => states.push(s.state));
  await assert.rejects(client.connect(), (e) => e.code === "connect_refused");
  assert.equal(client.state, "stopped");
  assert.deepEqual(states, ["connecting", "stopped"]);
});

test("a token refused after it expired is renewed by logging in again, once", async () => {
  const frank = await account("frank");
  const login = await frank.client.api.login(frank.username, "correct horse battery", "node1");
  // The device's clock says the token has expired, and the broker refuses it: re-login, connect.
  await frank.client.useSession({ ...login, token: `${login.token.slice(0, -4)}AAAA`, expires_at: 0 });
  await frank.client.connect();
  try {
    assert.equal(frank.client.state, "connected");
    assert.deepEqual(frank.seen.states.map((s) => s.state), ["connecting", "reconnecting", "connecting", "connected"]);
    assert.equal(frank.seen.states[1].failure, "not_authorized");
  } finally {
    await frank.client.disconnect();
  }
});

test("a cursor from an epoch the server no longer has is reset to the latest page", async () => {
  const gina = await account("gina");
  const channel = await gina.client.createChannel("group", [], "epochs");
  await gina.client.connect();
  try {
    await gina.client.send(channel, "first");
    await gina.client.send(channel, "second");
    // The tracker holds a cursor of epoch 99 (the channel's history was rebuilt since).
    const tracker = new ChannelTracker();
    tracker.applySync({ channel, status: "new", epoch: 99, last_seq: 7, has_more: false, messages: [] });
    tracker.endSync(channel);
    const answer = await gina.client.api.sync(tracker.syncCursors());
    const ch = answer.channels.find((c) => c.channel === channel);
    assert.equal(ch.status, "reset");
    const applied = tracker.applySync(ch);
    assert.deepEqual(applied.replace.map((m) => m.body), ["first", "second"]);
    assert.deepEqual(tracker.cursor(channel), { epoch: ch.epoch, lastSeq: 2 });
  } finally {
    await gina.client.disconnect();
  }
});
