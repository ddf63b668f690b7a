// The SDK's newer surface against a real running system: rich messages and their fold (checked
// against the server's own `state`), servers, roles and invites, search, and the token lifecycle
// (refresh with rotation, the in-band refresh on the live connection, reuse detection, logout).
import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import { after, before, test } from "node:test";

import { HttpApi, MqchatClient, MqchatError, TARGETED_KINDS, fold, stateOut } from "../dist/index.js";
import { freePort, startSystem, uniqueName, waitFor } from "./system.mjs";

const PASSWORD = "correct horse battery";
let system;
let opsPort;
// The signing key is the test's, so it can make a token that has already expired.
const SECRET = randomBytes(32).toString("hex");
before(async () => {
  opsPort = await freePort();
  system = await startSystem({ env: { MQCHAT_OPS__BROKER_PORT: String(opsPort), MQCHAT_AUTH__SECRET: SECRET } });
});

/** `token` with its times moved `ageS` seconds into the past (so it has expired), signed again. */
function aged(token, ageS) {
  const [, payload] = token.split(".");
  const claims = JSON.parse(Buffer.from(payload, "base64url").toString());
  for (const k of ["iat", "nbf", "exp"]) if (typeof claims[k] === "number") claims[k] -= ageS;
  const head = Buffer.from(JSON.stringify({ alg: "HS256", typ: "JWT" })).toString("base64url");
  const body = Buffer.from(JSON.stringify(claims)).toString("base64url");
  const sig = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return { token: `${head}.${body}.${sig}`, expires_at: claims.exp };
}
after(async () => { await system?.stop(); });

const clients = [];
after(async () => { for (const c of clients) await c.disconnect().catch(() => undefined); });

function recorder(client) {
  const seen = { messages: [], updates: [], server: [], states: [], sessions: [], errors: [], acks: [] };
  client.on("ack", (a) => seen.acks.push(a));
  client.on("message", (m) => seen.messages.push(m));
  client.on("update", (u) => seen.updates.push(u));
  client.on("server", (e) => seen.server.push(e));
  client.on("state", (s) => seen.states.push(s));
  client.on("session", (s) => seen.sessions.push(s));
  client.on("error", (e) => seen.errors.push(e));
  return seen;
}

async function account(name, opts = {}) {
  const client = new MqchatClient({ apiUrl: system.api, deviceId: "node1", ...opts });
  clients.push(client);
  const username = uniqueName(name);
  await client.signup(username, PASSWORD);
  await client.login(username, PASSWORD);
  return { client, seen: recorder(client), username };
}

async function device(username, deviceId, opts = {}) {
  const client = new MqchatClient({ apiUrl: system.api, deviceId, ...opts });
  clients.push(client);
  await client.login(username, PASSWORD);
  return { client, seen: recorder(client) };
}

/** Poll an asynchronous check until it returns a truthy value (each try is a real request). */
async function eventually(check, { timeoutMs = 20_000, everyMs = 250, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The server's folded states of a channel's messages, as `me` sees them: seq → state. */
async function serverStates(client, channel) {
  const page = await client.history(channel, { limit: 200 });
  assert.equal(page.has_more, false);
  return page;
}

test("rich messages: sends, refusals, and the SDK's fold equal to the server's state", async () => {
  const alice = await account("alice");
  const bob = await account("bob");
  const channel = await alice.client.createChannel("group", [bob.client.userId], "rich");
  await alice.client.connect();
  await bob.client.connect();
  const a = alice.client;
  const b = bob.client;

  const m1 = await a.send(channel, "first");                               // 1
  const m2 = await b.send(channel, "second, quoting", { replyTo: m1.seq }); // 2
  const r1 = await b.reply(channel, m1.seq, "in the thread");              // 3
  const r2 = await a.reply(channel, m1.seq, "me too");                     // 4
  await a.react(channel, m1.seq, "👍");                                     // 5
  await b.react(channel, m1.seq, "👍");                                     // 6
  await b.react(channel, m1.seq, ":party_parrot:");                         // 7
  await b.react(channel, m1.seq, "👍");                                     // 8: again: no change
  await a.unreact(channel, m1.seq, ":party_parrot:");                       // 9: not alice's: no change
  await b.unreact(channel, m1.seq, ":party_parrot:");                       // 10: gone
  await a.edit(channel, m1.seq, "first (edited)");                          // 11
  await a.pin(channel, m1.seq);                                             // 12
  await b.pin(channel, m2.seq);                                             // 13
  await b.unpin(channel, m2.seq);                                           // 14
  await b.deleteMessage(channel, r1.seq);                                   // 15: a tombstone in the thread
  await a.react(channel, m2.seq, "🎉");                                     // 16
  const last = await b.deleteMessage(channel, m2.seq);                      // 17: its reactions go too
  assert.equal(last.seq, 17);

  // Refusals: the bridge's codes, and the SDK's own checks before anything is sent.
  await assert.rejects(b.edit(channel, m1.seq, "words in her mouth"), (e) => e.code === "forbidden" && e.action === "drop");
  await assert.rejects(a.react(channel, m2.seq, "👍"), (e) => e.code === "target_deleted");
  await assert.rejects(a.edit(channel, 999, "nothing there"), (e) => e.code === "not_found");
  await assert.rejects(a.reply(channel, r2.seq, "nested"), (e) => e.code === "invalid_thread");
  await assert.rejects(a.react(channel, m1.seq, "abc"), (e) => e.code === "invalid_emoji");
  await assert.rejects(a.edit(channel, m1.seq, "   "), (e) => e instanceof MqchatError && e.code === "empty_body");
  await assert.rejects(a.pin(channel, 0), (e) => e.code === "invalid_target");
  await assert.rejects(a.send(channel, "x", { thread: 1.5 }), (e) => e.code === "invalid_target");

  await waitFor(() => b.view(channel).length === 4 && bob.seen.messages.length === 17, { what: "bob holds all 17" });
  const m1Updates = bob.seen.updates.filter((u) => u.seq === m1.seq);
  assert.deepEqual(m1Updates.map((u) => u.cause.kind),
    ["text", "text", "reaction", "reaction", "reaction", "reaction", "edit", "pin"],
    "replies (reply_count) and each effective change of message 1, and nothing for the no-ops");

  for (const who of [a, b]) {
    const page = await serverStates(who, channel);
    assert.equal(page.messages.length, 17);
    // The pure fold of the same events gives the server's state, for each reader (`me` differs).
    const folded = fold(page.messages);
    for (const m of page.messages) {
      if (TARGETED_KINDS.has(m.kind)) {
        assert.equal(m.state ?? null, null, `event ${m.seq} has no state`);
        continue;
      }
      assert.deepEqual(stateOut(folded.get(m.seq), who.userId), m.state, `seq ${m.seq} for ${who.userId}`);
    }
    // The live client's folded view (built from the stream as it came) agrees too.
    assert.deepEqual(who.view(channel).map((v) => [v.message.seq, v.state]),
      page.messages.filter((m) => m.state).map((m) => [m.seq, m.state]));
  }
  const s1 = b.messageState(channel, m1.seq);
  assert.equal(s1.body, "first (edited)");
  assert.equal(typeof s1.edited_ts, "number");
  assert.equal(s1.pinned, true);
  assert.deepEqual(s1.reactions, [{ emoji: "👍", count: 2, me: true }]);
  assert.equal(s1.reply_count, 2);
  assert.deepEqual(b.messageState(channel, m2.seq),
    { body: "", edited_ts: null, deleted: true, pinned: false, reactions: [], reply_count: 0, last_reply_ts: null });

  // Threads and pins.
  const thread = await b.thread(channel, m1.seq);
  assert.equal(thread.root.seq, m1.seq);
  assert.equal(thread.root.state.reply_count, 2);
  assert.deepEqual(thread.replies.map((r) => [r.seq, r.state.deleted]), [[r1.seq, true], [r2.seq, false]]);
  assert.deepEqual((await a.pins(channel)).messages.map((m) => m.seq), [m1.seq]);
  await assert.rejects(a.thread(channel, 5), (e) => e.code === "not_found" && e.status === 404);

  // Only texts count toward unread: bob's own texts moved his marker to 3; alice's text 4 is unread.
  const inbox = await b.inbox();
  assert.equal(inbox.channels.find((c) => c.channel_id === channel).unread, 1);
  assert.equal(b.unread(channel), 1);

  // A new device of bob's with a short first page folds older pages in as it scrolls back.
  const phone = await device(bob.username, "phone", { syncLimit: 5 });
  await phone.client.connect();
  assert.equal(phone.client.view(channel).length, 0, "the latest 5 are all events");
  let more = true;
  while (more) more = (await phone.client.loadOlder(channel, 5)).hasMore;
  const page = await serverStates(b, channel);
  assert.deepEqual(phone.client.view(channel).map((v) => [v.message.seq, v.state]),
    page.messages.filter((m) => m.state).map((m) => [m.seq, m.state]));
});

test("servers: create, channels, invites, members and roles; joining subscribes to the server's channels", async () => {
  const owner = await account("olga");
  const guest = await account("gus");
  const late = await account("lou");
  await owner.client.connect();
  await guest.client.connect();
  const api = owner.client.api;

  const server = await api.createServer("Guild");
  const sid = server.server_id;
  assert.equal(server.owner_id, owner.client.userId);
  assert.deepEqual((await api.myServers()).map((s) => s.server_id), [sid]);
  const general = await api.createServerChannel(sid, "general");
  assert.deepEqual((await api.serverChannels(sid)).map((c) => [c.channel_id, c.name]), [[general.channel_id, "general"]]);
  await assert.rejects(guest.client.api.serverChannels(sid), (e) => e.code === "server_not_found" && e.status === 404);

  const invite = await api.createInvite(sid, { max_uses: 1 });
  const preview = await guest.client.api.previewInvite(invite.code);
  assert.deepEqual([preview.server_name, preview.usable], ["Guild", true]);
  const joined = await guest.client.api.acceptInvite(invite.code);
  assert.deepEqual([joined.server.server_id, joined.joined], [sid, true]);
  await assert.rejects(late.client.api.acceptInvite(invite.code), (e) => e.code === "invite_used_up" && e.status === 410);

  // The `server` event makes the client take its channel list again and subscribe to the new one.
  await waitFor(() => guest.seen.server.some((e) => e.server === sid && e.action === "joined"), { what: "server event" });
  await eventually(async () => {
    await owner.client.send(general.channel_id, "welcome");
    return waitFor(() => guest.seen.messages.some((m) => m.channel === general.channel_id && m.body === "welcome"),
      { timeoutMs: 2000, what: "welcome" }).catch(() => false);
  }, { what: "the guest receives the server channel live" });
  assert.deepEqual((await guest.client.api.myServers()).map((s) => s.server_id), [sid]);

  const members = (await api.members(sid)).members.map((m) => m.user_id).sort();
  assert.deepEqual(members, [owner.client.userId, guest.client.userId].sort());

  const mods = await api.createRole(sid, "mods", { permissions: ["manage_messages"] });
  assert.deepEqual(mods.permissions, ["manage_messages"]);
  assert.deepEqual(await api.addMemberRole(sid, guest.client.userId, mods.role_id), { changed: true });
  const roles = await api.roles(sid);
  assert.deepEqual(roles.map((r) => [r.name, r.everyone]), [["mods", false], ["@everyone", true]]);
  assert.deepEqual((await api.members(sid)).members.find((m) => m.user_id === guest.client.userId).role_ids,
    [mods.role_id]);
  await assert.rejects(guest.client.api.createRole(sid, "mine"), (e) => e.code === "forbidden" && e.status === 403);
  await assert.rejects(api.createRole(sid, "bad", { permissions: ["fly"] }), (e) => e.code === "unknown_permission");
  const renamed = await api.editRole(sid, mods.role_id, { name: "moderators" });
  assert.equal(renamed.name, "moderators");
  assert.deepEqual(await api.removeMemberRole(sid, guest.client.userId, mods.role_id), { changed: true });
  await api.deleteRole(sid, mods.role_id);
  assert.deepEqual((await api.roles(sid)).map((r) => r.name), ["@everyone"]);

  // Slow mode: the second send is refused with a wait, kept, and sent again (same cmid) once it is over.
  const slow = await api.createServerChannel(sid, "slow", { slow_mode_s: 2 });
  const started = Date.now();
  const [one, two] = await Promise.all([guest.client.send(slow.channel_id, "one", { cmid: "slow-1" }),
    guest.client.send(slow.channel_id, "two", { cmid: "slow-2" })]);
  assert.deepEqual([one.seq, two.seq], [1, 2]);
  const wait = guest.seen.acks.find((x) => x.cmid === "slow-2" && !x.ok);
  assert.equal(wait.error.code, "slow_mode");
  assert.ok(Date.now() - started >= wait.error.retry_after_ms - 100, "not sent again before the wait is over");
});

test("search: hits in my channels only, paged by cursor; refusals carry search codes", async () => {
  const sam = await account("sam");
  const other = await account("oscar");
  const mine = await sam.client.createChannel("group", [], "notes");
  const theirs = await other.client.createChannel("group", [], "secret");
  await sam.client.api.send(mine, { cmid: "s1", kind: "text", body: "the quick brown fox" });
  await sam.client.api.send(mine, { cmid: "s2", kind: "text", body: "quick thinking" });
  await sam.client.api.send(mine, { cmid: "s3", kind: "text", body: "a lazy dog" });
  await other.client.api.send(theirs, { cmid: "o1", kind: "text", body: "quick and secret" });

  // The index follows the message log: wait (gently: searches are rate limited) until both are in.
  const first = await eventually(async () => {
    const p = await sam.client.search("quick", { limit: 1 });
    return p.next_cursor ? p : null;
  }, { everyMs: 1000, what: "the messages indexed" });
  assert.equal(first.hits.length, 1);
  const second = await sam.client.search("quick", { limit: 1, cursor: first.next_cursor });
  const bodies = [...first.hits, ...second.hits].map((h) => h.message.body);
  assert.deepEqual(bodies, ["quick thinking", "the quick brown fox"], "newest first, over two pages");
  assert.equal(second.next_cursor, null);
  assert.match(first.hits[0].snippet, /<mark>quick<\/mark>/);
  assert.equal(first.hits[0].message.state.body, "quick thinking");
  assert.equal(first.hits[0].server, null);
  assert.deepEqual((await sam.client.search("quick", { channel: theirs })).hits, []);
  await assert.rejects(sam.client.search("   "), (e) => e.code === "empty_query" && e.status === 400);
  await assert.rejects(sam.client.search("quick", { limit: 1, cursor: "nonsense" }), (e) => e.code === "invalid_cursor");
});

async function brokerMetric(name, labels) {
  const text = await (await fetch(`http://127.0.0.1:${opsPort}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(" ").at(-1)) : 0;
}

test("tokens: refresh rotates, reaches the live connection in-band, and a reused refresh token ends the login",
  async () => {
    const erin = await account("erin");
    await erin.client.connect();
    const first = erin.client.currentSession;
    assert.ok(first.refresh_token);
    // Expiry times are whole seconds: the broker takes only a token that expires later.
    const loggedInMs = Date.now();
    await waitFor(() => Date.now() - loggedInMs > 1100, { what: "the next second" });
    const okBefore = await brokerMetric("mqchat_broker_token_refreshes_total", 'outcome="ok"');

    const next = await erin.client.refresh();
    assert.notEqual(next.token, first.token);
    assert.notEqual(next.refresh_token, first.refresh_token);
    assert.ok(next.expires_at > first.expires_at);
    assert.deepEqual(erin.seen.sessions.map((s) => s.token), [next.token], "the app is told to keep the new pair");
    await eventually(async () => (await brokerMetric("mqchat_broker_token_refreshes_total", 'outcome="ok"')) > okBefore,
      { what: "the broker took the token in-band" });
    assert.equal(erin.client.state, "connected");
    assert.deepEqual(erin.seen.states.map((s) => s.state), ["connecting", "connected"], "no reconnect");
    await erin.client.inbox(); // the HTTP API takes the new token

    // Presenting the spent refresh token again (a stolen copy) ends the login: the live
    // connection is closed and its token refused, so the client stops instead of looping.
    await assert.rejects(new HttpApi(system.api).refresh(first.refresh_token),
      (e) => e.code === "refresh_reused" && e.status === 401 && e.action === "relogin");
    await waitFor(() => erin.client.state === "stopped", { what: "erin stopped" });
    await assert.rejects(erin.client.inbox(), (e) => e.code === "token_revoked");
    await assert.rejects(erin.client.refresh(), (e) => e.code === "refresh_invalid");
  });

test("tokens: an expired access token is refreshed on the API's 401 and on the broker's refusal", async () => {
  const gil = await account("gil");
  // A device without the password (a kept session), whose access token has expired.
  const kept = new MqchatClient({ apiUrl: system.api, deviceId: "node1", autoRefresh: false });
  clients.push(kept);
  const seen = recorder(kept);
  await kept.useSession({ ...gil.client.currentSession, ...aged(gil.client.currentSession.token, 7200) });
  await assert.rejects(new HttpApi(system.api).request("GET", "/v1/me/inbox", undefined, { auth: false }),
    (e) => e.code === "unauthorized");
  const inbox = await kept.inbox(); // 401 token_expired → refresh → the same call again
  assert.deepEqual(inbox.channels, []);
  assert.equal(seen.sessions.length, 1);
  assert.ok(kept.currentSession.expires_at * 1000 > Date.now());

  // The broker refuses an expired token (CONNACK 5); the table re-logs in with the refresh token.
  await kept.useSession({ ...kept.currentSession, ...aged(kept.currentSession.token, 7200) });
  await kept.connect();
  assert.deepEqual(seen.states.map((s) => s.state), ["connecting", "reconnecting", "connecting", "connected"]);
  assert.equal(seen.states[1].failure, "not_authorized");
  assert.equal(seen.sessions.length, 3);
});

test("tokens: logout ends this device's login; logout-all disconnects the others", async () => {
  const fay = await account("fay");
  const tablet = await device(fay.username, "tablet");
  const phone = await device(fay.username, "phone");
  await Promise.all([fay.client.connect(), tablet.client.connect(), phone.client.connect()]);
  const oldToken = fay.client.currentSession.token;

  const out = await fay.client.logout();
  assert.equal(out.devices, "this");
  assert.equal(fay.client.state, "idle");
  const stale = new HttpApi(system.api);
  stale.token = oldToken;
  await assert.rejects(stale.inbox(), (e) => e.code === "token_revoked" && e.action === "relogin");
  const channel = await tablet.client.createChannel("group", [], "still here");
  assert.equal((await tablet.client.send(channel, "the tablet is still signed in")).ok, true);

  const all = await tablet.client.logoutAll();
  assert.equal(all.devices, "all");
  await waitFor(() => phone.client.state === "stopped", { what: "the phone disconnected and stopped" });
  assert.ok(phone.seen.states.some((s) => s.failure === "connection_lost"));
  await assert.rejects(phone.client.refresh(), (e) => e.code === "refresh_invalid");
});
