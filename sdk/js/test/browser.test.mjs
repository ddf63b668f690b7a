// The web chat in a real headless Chromium (Debian's `chromium`, driven by playwright-core; no
// browser is ever downloaded): two browser sessions and a Python MQTT client chat with each other.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

import { python, startSystem, uniqueName } from "./system.mjs";

const CHROMIUM = process.env.MQCHAT_CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "test-artifacts");
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];
const PASSWORD = "correct horse battery";

let system;
const cleanup = [];
before(async () => { system = await startSystem(); });
after(async () => {
  for (const fn of cleanup.reverse()) await fn().catch(() => undefined);
  await system?.stop();
});

/** A browser session of its own: a fresh profile directory, a fresh Chromium. */
async function session() {
  const profile = mkdtempSync(path.join(tmpdir(), "mqchat-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM, headless: true, args: ARGS, viewport: { width: 1100, height: 700 },
  });
  cleanup.push(async () => { await context.close(); rmSync(profile, { recursive: true, force: true }); });
  const page = context.pages()[0] ?? await context.newPage();
  const errors = [];
  page.on("pageerror", (err) => errors.push(err));
  page.errors = errors;
  return page;
}

async function signup(page, username) {
  await page.goto(`${system.api}/`);
  await page.fill("#username", username);
  await page.fill("#password", PASSWORD);
  await page.click("#signup");
  await page.waitForSelector("#me-dot.connected");
  return page.textContent("#me-id");
}

/** The Python participant: one JSON line per event. */
function pythonPeer(username) {
  const proc = spawn(python(), [path.join(path.dirname(fileURLToPath(import.meta.url)), "python_peer.py"),
    system.api, username], { stdio: ["pipe", "pipe", "inherit"] });
  const events = [];
  const waiters = [];
  createInterface({ input: proc.stdout }).on("line", (line) => {
    const ev = JSON.parse(line);
    events.push(ev);
    for (const w of [...waiters]) if (w.match(ev)) { waiters.splice(waiters.indexOf(w), 1); w.resolve(ev); }
  });
  cleanup.push(async () => { proc.stdin.end(); await new Promise((r) => proc.once("exit", r)); });
  return {
    events,
    next(match, timeoutMs = 15_000) {
      const found = events.find(match);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const w = { match, resolve };
        waiters.push(w);
        setTimeout(() => reject(new Error("the Python peer did not report the event")), timeoutMs).unref();
      });
    },
  };
}

const messageBodies = (page) => page.$$eval("#messages .msg .body", (nodes) => nodes.map((n) => n.textContent));

test("two browsers and a Python MQTT client chat; typing, presence, reactions, edits, unread badges, older history, servers and search",
  { timeout: 150_000 }, async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: apt-get install chromium (scripts/test does)`);
    const py = pythonPeer(uniqueName("py"));
    const { user_id: pyId } = await py.next((e) => e.event === "ready");
    const [alice, bob] = [await session(), await session()];
    const aliceId = await signup(alice, uniqueName("alice"));
    const bobId = await signup(bob, uniqueName("bob"));

    // Alice creates a group with bob and the Python client, by user id.
    await alice.selectOption("#nc-kind", "group");
    await alice.fill("#nc-name", "team");
    await alice.fill("#nc-members", `${bobId}, ${pyId}`);
    await alice.click("#new-channel button[type=submit]");
    await alice.waitForSelector("#conv-title:has-text('team')");
    const team = await alice.getAttribute("#channels li.active", "data-channel");
    await py.next((e) => e.event === "joined" && e.channel === team);
    await bob.click(`#channels li[data-channel="${team}"]`);
    await bob.waitForSelector("#conv-title:has-text('team')");

    // Presence dots: everyone in the channel is online (alice's own dot included).
    await alice.waitForFunction(() => document.querySelectorAll("#conv-members .dot.online").length === 3);

    // Typing shows on the other side.
    await alice.type("#text", "hi bob", { delay: 20 });
    await bob.waitForSelector("#typing:has-text('is typing')");
    await alice.press("#text", "Enter");
    await bob.waitForSelector("#messages .msg .body:has-text('hi bob')");
    await bob.waitForFunction(() => document.querySelector("#typing").textContent === "");

    // Bob asks the Python client, which answers; both browsers see all three messages in order.
    await bob.fill("#text", "hi alice, python?");
    await bob.press("#text", "Enter");
    await alice.waitForSelector("#messages .msg .body:has-text('hello from python')");
    await bob.waitForSelector("#messages .msg .body:has-text('hello from python')");
    assert.deepEqual(await messageBodies(alice), ["hi bob", "hi alice, python?", "hello from python"]);
    assert.deepEqual(await messageBodies(bob), ["hi bob", "hi alice, python?", "hello from python"]);
    const seen = await py.next((e) => e.event === "message" && e.body === "hi bob");
    assert.equal(seen.sender, aliceId);

    // A reaction from one browser shows in the other: the SDK folds the event into the message.
    const hiBob = bob.locator("#messages .msg", { hasText: "hi bob" }).first();
    await hiBob.hover();
    await hiBob.locator('.actions .react[data-emoji="👍"]').click();
    await alice.waitForSelector('#messages .msg .reaction:not(.me):has-text("👍 1")');
    await bob.waitForSelector('#messages .msg .reaction.me:has-text("👍 1")');
    // Alice edits her message; bob sees the new words, marked edited.
    const mine = alice.locator("#messages .msg.mine", { hasText: "hi bob" }).first();
    await mine.hover();
    await mine.locator(".act-edit").click();
    await alice.fill("#text", "hi bob!");
    await alice.press("#text", "Enter");
    await bob.waitForSelector("#messages .msg .body:text-is('hi bob!')");
    await bob.waitForSelector("#messages .msg .edited");
    mkdirSync(ARTIFACTS, { recursive: true });
    await alice.screenshot({ path: path.join(ARTIFACTS, "web-chat-reaction.png") });

    // An unread badge: alice writes bob directly while bob looks at the group.
    await alice.selectOption("#nc-kind", "direct");
    await alice.fill("#nc-members", bobId);
    await alice.fill("#nc-name", "");
    await alice.click("#new-channel button[type=submit]");
    await alice.waitForSelector("#channels li.active .dot");
    await alice.fill("#text", "just you and me");
    await alice.press("#text", "Enter");
    await bob.waitForSelector("#channels li:not(.active) .badge:has-text('1')");
    assert.equal(await bob.textContent("#badge"), "1");
    mkdirSync(ARTIFACTS, { recursive: true });
    await bob.screenshot({ path: path.join(ARTIFACTS, "web-chat-bob.png") });

    // Infinite scroll: 45 more messages, a reload (the session is kept), then older pages on scroll-up.
    await alice.click(`#channels li[data-channel="${team}"]`);
    await alice.fill("#text", "python, flood 45");
    await alice.press("#text", "Enter");
    await alice.waitForSelector("#messages .msg .body:has-text('flood 45')", { timeout: 30_000 });
    await alice.reload();
    await alice.waitForSelector("#me-dot.connected", { timeout: 60_000 }); // a resume under a loaded CI machine
    await alice.click(`#channels li[data-channel="${team}"]`);
    await alice.waitForSelector("#messages .msg .body:has-text('flood 45')");
    const before = (await messageBodies(alice)).length;
    assert.ok(before < 49, `the first page is short (${before})`);
    for (let i = 0; i < 10 && !(await messageBodies(alice)).includes("hi bob!"); i++) {
      await alice.$eval("#messages", (box) => { box.scrollTop = 0; box.dispatchEvent(new Event("scroll")); });
      await alice.waitForFunction((n) => document.querySelectorAll("#messages .msg").length > n
        || document.querySelector("#messages .older") === null, before);
    }
    const all = await messageBodies(alice);
    assert.equal(all.length, 49);
    assert.deepEqual(all.slice(0, 3), ["hi bob!", "hi alice, python?", "hello from python"]);
    assert.equal(all.at(-1), "flood 45");
    await alice.$eval("#messages", (box) => { box.scrollTop = box.scrollHeight; });
    await alice.screenshot({ path: path.join(ARTIFACTS, "web-chat.png") });

    // Servers: alice creates one with a channel and an invite; bob joins by the code and reads it.
    await alice.fill("#sv-name", "Guild");
    await alice.click("#sv-create");
    await alice.waitForSelector("#servers li.server:has-text('Guild')");
    await alice.fill("#sc-name", "general");
    await alice.click("#sc-create");
    await alice.waitForSelector("#conv-title:has-text('Guild › general')");
    await alice.click("#sv-invite");
    await alice.waitForFunction(() => document.querySelector("#sv-code").textContent.startsWith("invite code: "));
    const code = (await alice.textContent("#sv-code")).replace("invite code: ", "");
    await bob.fill("#sv-name", code);
    await bob.click("#sv-join");
    await bob.click("#servers .sub li:has-text('general')");
    await bob.waitForSelector("#conv-title:has-text('Guild › general')");
    await alice.fill("#text", "welcome to the guild");
    await alice.press("#text", "Enter");
    await bob.waitForSelector("#messages .msg .body:has-text('welcome to the guild')");

    // Search: the box lists the hit (once indexed) with its highlighted words.
    await bob.fill("#search", "guild");
    for (let i = 0; i < 20 && !(await bob.$("#results .hit mark")); i++) {
      await bob.press("#search", "Enter");
      await bob.waitForSelector("#results .hit mark", { timeout: 1000 }).catch(() => undefined);
    }
    assert.equal(await bob.textContent("#results .hit mark"), "guild");
    await bob.screenshot({ path: path.join(ARTIFACTS, "web-chat-servers.png") });

    assert.deepEqual([...alice.errors, ...bob.errors].map(String), []);
  });
