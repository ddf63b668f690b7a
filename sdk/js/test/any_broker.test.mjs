// The SDK on an external broker: `mqchat up --broker` over an anonymous Mosquitto (no ACL), so a
// plain MQTT client can watch a device's own presence topic. Presence works there only from what
// the devices publish (docs/protocol.md, "Presence"): the will, the status after CONNACK, the
// heartbeats and the offline before DISCONNECT, each carrying the connection's `conn`.
// Channel members paging (first 20 embedded, the rest by cursor) runs on the same system.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import mqtt from "mqtt";

import { MqchatClient, MqchatError } from "../dist/index.js";
import { mosquittoBinary, startSystem, uniqueName, waitFor } from "./system.mjs";

/** Short, so heartbeats come every second (a third of the lease). */
const LEASE_MS = 3000;
const REFRESH_MS = LEASE_MS / 3;
const HAVE_MOSQUITTO = mosquittoBinary() !== null;

let system;
before(async () => {
  system = await startSystem({
    mosquitto: HAVE_MOSQUITTO,
    env: { MQCHAT_BROKER__PRESENCE_LEASE_MS: String(LEASE_MS), MQCHAT_RATELIMIT__ENABLED: "false" },
  });
});
after(async () => { await system?.stop(); });

async function account(name, opts = {}) {
  const client = new MqchatClient({ apiUrl: system.api, deviceId: "node1", ...opts });
  const username = uniqueName(name);
  await client.signup(username, "correct horse battery");
  await client.login(username, "correct horse battery");
  return client;
}

/** A plain MQTT client on Mosquitto recording every publish on `filters`, parsed, in arrival order. */
async function spy(filters) {
  const seen = [];
  const mq = mqtt.connect(`mqtt://127.0.0.1:${system.mqttPort}`, { protocolVersion: 4, reconnectPeriod: 0 });
  mq.on("message", (topic, payload, packet) => {
    seen.push({ topic, retain: packet.retain, ...JSON.parse(payload.toString()) });
  });
  await new Promise((resolve, reject) => { mq.once("connect", resolve); mq.once("error", reject); });
  await mq.subscribeAsync(filters, { qos: 1 });
  return { seen, close: () => mq.endAsync() };
}

test("on Mosquitto: will, status and heartbeats share one conn, a new connection a new conn; disconnect() says offline",
  { skip: HAVE_MOSQUITTO ? false : "mosquitto is not installed" }, async (t) => {
    const alice = await account("alice", { backoff: { baseMs: 300, capMs: 300 }, random: () => 0.99 });
    const bob = await account("bob");
    const me = alice.userId;
    const device = `presence/${me}/node1`;
    assert.equal(alice.currentSession.mqtt.presence_refresh_ms, REFRESH_MS, "the login asks for heartbeats");
    const watch = await spy([device]);
    const bobSaw = [];
    bob.on("presence", (p) => { if (p.user === me) bobSaw.push(p.status); });
    t.after(async () => { await watch.close(); await alice.disconnect(); await bob.disconnect(); });
    await bob.connect();
    bob.watchPresence([me]);

    // Connected: `online` right after CONNACK, then heartbeats with the same conn and fresh ts.
    await alice.connect();
    const live = () => watch.seen.filter((m) => !m.retain);
    await waitFor(() => live().length >= 3, { what: "online and two heartbeats", timeoutMs: 10_000 });
    const [first, ...beats] = live();
    const c1 = first.conn;
    assert.match(c1, /^[0-9a-f]{12}$/);
    assert.equal(first.status, "online");
    for (const b of beats) assert.deepEqual([b.status, b.conn], ["online", c1]);
    const ts = live().map((m) => m.ts);
    assert.ok(ts.every((v, i) => i === 0 || v > ts[i - 1]), `fresh ts on every heartbeat: ${ts}`);
    await waitFor(() => bobSaw.at(-1) === "online", { what: "bob sees alice online (from the workers' leases)" });

    // The network goes away: Mosquitto sends the will of c1; the SDK reconnects with a new conn.
    alice.dropConnection();
    await waitFor(() => live().some((m) => m.conn === c1 && m.status === "offline"), { what: "the will of c1" });
    assert.deepEqual(live().find((m) => m.conn === c1 && m.status === "offline"), { topic: device, retain: false,
      status: "offline", ts: 0, conn: c1 });
    await waitFor(() => live().some((m) => m.conn !== c1 && m.status === "online"), { what: "online with a new conn" });
    const c2 = live().find((m) => m.conn !== c1).conn;
    assert.match(c2, /^[0-9a-f]{12}$/);
    await waitFor(() => alice.state === "connected", { what: "alice connected again" });

    // `away` and the heartbeats after it repeat the status with the connection's conn.
    await alice.setStatus("away");
    await waitFor(() => live().filter((m) => m.status === "away").length >= 2, { what: "away and a heartbeat of it" });
    for (const m of live().filter((x) => x.status === "away")) assert.equal(m.conn, c2);
    await waitFor(() => bobSaw.at(-1) === "away", { what: "bob sees alice away" });
    await alice.setStatus("online");

    // disconnect(): offline with c2 (ts set) before DISCONNECT; contacts see it at once, not a lease later.
    await alice.disconnect();
    await waitFor(() => live().some((m) => m.status === "offline" && m.conn === c2), { what: "offline of c2" });
    const offline = live().find((m) => m.status === "offline" && m.conn === c2);
    assert.ok(offline.ts > 0, "a real timestamp, not the will's 0");
    await waitFor(() => bobSaw.at(-1) === "offline", { what: "bob sees alice offline", timeoutMs: LEASE_MS / 2 });

    // No heartbeat outlives the connection: two refresh intervals pass without a publish.
    const count = live().length;
    await new Promise((r) => setTimeout(r, 2 * REFRESH_MS + 200));
    assert.equal(live().length, count, `no publish after disconnect(): ${JSON.stringify(live().slice(count))}`);
  });

test("channel members: the first 20 are embedded, the rest come by cursor", async (t) => {
  const owner = await account("owner");
  t.after(() => owner.disconnect());
  const others = await Promise.all(Array.from({ length: 24 }, (_, i) => owner.signup(uniqueName(`m${i}-`),
    "correct horse battery")));
  const everyone = [owner.userId, ...others.map((u) => u.user_id)].sort();

  const created = await owner.api.createChannel("group", others.map((u) => u.user_id), "crowd");
  assert.deepEqual(created.members, everyone.slice(0, 20));
  assert.equal(typeof created.members_next_cursor, "string");

  const rest = await owner.channelMembers(created.channel_id, { cursor: created.members_next_cursor });
  assert.deepEqual(rest, { channel_id: created.channel_id, members: everyone.slice(20), next_cursor: null });

  const listed = (await owner.api.channels()).find((c) => c.channel_id === created.channel_id);
  assert.deepEqual([listed.members, listed.members_next_cursor], [everyone.slice(0, 20), created.members_next_cursor]);
  const inboxed = (await owner.inbox()).channels.find((c) => c.channel_id === created.channel_id);
  assert.deepEqual(inboxed.members, everyone.slice(0, 20));
  assert.equal(typeof inboxed.members_next_cursor, "string");

  // Small pages, by hand and by the helper.
  const page = await owner.channelMembers(created.channel_id, { limit: 10 });
  assert.deepEqual(page.members, everyone.slice(0, 10));
  const page2 = await owner.channelMembers(created.channel_id, { limit: 10, cursor: page.next_cursor });
  assert.deepEqual(page2.members, everyone.slice(10, 20));
  assert.deepEqual(await owner.allChannelMembers(created.channel_id), everyone);

  // A small channel is complete as embedded.
  const pair = await owner.api.createChannel("direct", [others[0].user_id]);
  assert.equal(pair.members_next_cursor, null);
  assert.deepEqual(await owner.allChannelMembers(pair.channel_id), [owner.userId, others[0].user_id].sort());

  // A cursor belongs to its channel; bad limits are refused.
  await assert.rejects(owner.channelMembers(pair.channel_id, { cursor: page.next_cursor }),
    (e) => e instanceof MqchatError && e.code === "invalid_cursor" && e.status === 422);
  await assert.rejects(owner.channelMembers(created.channel_id, { limit: 0 }),
    (e) => e instanceof MqchatError && e.status === 422);
});
