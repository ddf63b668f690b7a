// The mqchat web chat: plain ES modules on the SDK (vendor/mqchat-sdk.js), no build step.
import { MqchatClient, MqchatError } from "./vendor/mqchat-sdk.js";

const $ = (id) => document.getElementById(id);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  for (const c of children) node.append(c);
  return node;
};

const SESSION_KEY = "mqchat:session";
const PAGE = 30;

/** This browser's device id, stable across visits. */
function deviceId() {
  let id = localStorage.getItem("mqchat:device");
  if (!id) {
    id = `web-${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
    localStorage.setItem("mqchat:device", id);
  }
  return id;
}

let client = null;
let me = null; // { user_id, username }
/** channel id → { info (inbox entry), messages: Message[] ascending, hasOlder, loadingOlder, unread } */
const channels = new Map();
const presence = new Map();
const typing = new Map(); // channel → Set(user)
let current = null;

function shortId(user) {
  if (me && user === me.user_id) return "you";
  return user.length > 10 ? `${user.slice(0, 4)}…${user.slice(-4)}` : user;
}

function channelTitle(info) {
  if (info.kind === "direct") {
    const other = info.members.find((m) => m !== me.user_id);
    return other ? shortId(other) : "direct";
  }
  return info.name || `group ${shortId(info.channel_id)}`;
}

// ---- auth --------------------------------------------------------------------------------------

async function authenticate(signup) {
  const username = $("username").value.trim();
  const password = $("password").value;
  $("auth-error").textContent = "";
  if (!$("auth-form").reportValidity()) return;
  const c = new MqchatClient({ apiUrl: "", deviceId: deviceId(), storage: localStorage, syncLimit: PAGE });
  try {
    if (signup) await c.signup(username, password);
    const login = await c.login(username, password);
    localStorage.setItem(SESSION_KEY, JSON.stringify({ login, username }));
    await start(c, { user_id: login.user_id, username });
  } catch (err) {
    $("auth-error").textContent = err instanceof MqchatError ? err.message.replace(/^[a-z_]+: /, "") : String(err);
  }
}

$("auth-form").addEventListener("submit", (e) => { e.preventDefault(); void authenticate(false); });
$("signup").addEventListener("click", () => void authenticate(true));
$("logout").addEventListener("click", async () => {
  localStorage.removeItem(SESSION_KEY);
  await client?.disconnect();
  location.reload();
});
$("me-id").addEventListener("click", () => navigator.clipboard?.writeText(me.user_id));

// ---- running -----------------------------------------------------------------------------------

async function start(c, who) {
  client = c;
  me = who;
  $("auth").hidden = true;
  $("chat").hidden = false;
  $("me-name").textContent = me.username;
  $("me-id").textContent = me.user_id;
  client.on("state", ({ state }) => {
    $("me-dot").className = `dot ${state}`;
    $("me-dot").title = state;
    if (state === "stopped") {
      localStorage.removeItem(SESSION_KEY);
      location.reload();
    }
  });
  client.on("reset", ({ channel, messages }) => {
    const ch = ensure(channel);
    ch.messages = [...messages];
    ch.hasOlder = (messages[0]?.seq ?? 1) > 1;
    if (channel === current) renderMessages(true);
  });
  client.on("message", (m) => {
    const ch = ensure(m.channel);
    ch.messages.push(m);
    if (m.channel === current) {
      appendMessage(m, true);
      clearTyping(m.channel, m.sender);
      if (document.visibilityState === "visible") void readCurrent();
    }
  });
  client.on("unread", ({ channel, unread, badge }) => {
    ensure(channel).unread = unread;
    renderChannels();
    $("badge").hidden = badge === 0;
    $("badge").textContent = String(badge);
  });
  client.on("membership", () => void refreshChannels());
  client.on("presence", ({ user, status }) => {
    presence.set(user, status);
    renderChannels();
    renderHeader();
  });
  client.on("typing", ({ channel, user, typing: on }) => {
    const set = typing.get(channel) ?? new Set();
    typing.set(channel, set);
    if (on) set.add(user); else set.delete(user);
    renderTyping();
  });
  await client.connect();
  await refreshChannels();
}

function ensure(channel) {
  let ch = channels.get(channel);
  if (!ch) {
    ch = { info: null, messages: [], hasOlder: false, loadingOlder: false, unread: 0 };
    channels.set(channel, ch);
  }
  return ch;
}

async function refreshChannels() {
  const inbox = await client.inbox();
  const users = new Set();
  for (const info of inbox.channels) {
    const ch = ensure(info.channel_id);
    ch.info = info;
    ch.unread = client.unread(info.channel_id);
    for (const m of info.members) if (m !== me.user_id) users.add(m);
  }
  client.watchPresence([...users]);
  renderChannels(inbox.channels.map((c) => c.channel_id));
  if (!current && inbox.channels[0]) select(inbox.channels[0].channel_id);
}

let order = [];
function renderChannels(newOrder) {
  if (newOrder) order = newOrder;
  const list = $("channels");
  list.replaceChildren(...order.filter((id) => channels.get(id)?.info).map((id) => {
    const ch = channels.get(id);
    const info = ch.info;
    const other = info.kind === "direct" ? info.members.find((m) => m !== me.user_id) : null;
    const li = el("li", { className: id === current ? "active" : "", title: id },
      other ? el("span", { className: `dot ${presence.get(other) ?? "offline"}` }) : el("span", { className: "kind", textContent: "#" }),
      el("span", { className: "name", textContent: channelTitle(info) }));
    if (ch.unread > 0 && id !== current) li.append(el("span", { className: "badge", textContent: String(ch.unread) }));
    li.dataset.channel = id;
    li.addEventListener("click", () => select(id));
    return li;
  }));
}

function select(id) {
  if (current && current !== id) {
    client.setTyping(current, false);
    client.unwatchTyping(current);
  }
  current = id;
  client.watchTyping(id);
  $("text").disabled = false;
  $("send").disabled = false;
  renderChannels();
  renderHeader();
  renderMessages(true);
  renderTyping();
  void readCurrent();
  $("text").focus();
}

function renderHeader() {
  const ch = current && channels.get(current);
  if (!ch?.info) return;
  $("conv-title").textContent = channelTitle(ch.info);
  $("conv-members").replaceChildren(...ch.info.members.map((m) => el("span", { title: m },
    el("span", { className: `dot ${m === me.user_id ? "online" : presence.get(m) ?? "offline"}` }),
    shortId(m))));
}

function messageNode(m) {
  const mine = m.sender === me.user_id;
  const time = new Date(m.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const body = m.body.replace(/<@([A-Za-z0-9_-]+)>/g, (_, u) => `@${shortId(u)}`);
  return el("div", { className: `msg${mine ? " mine" : ""}` },
    el("div", { className: "meta" }, el("span", { textContent: mine ? "you" : shortId(m.sender) }),
      el("span", { textContent: time })),
    el("div", { className: "body", textContent: body }));
}

function renderMessages(toBottom) {
  const box = $("messages");
  const ch = channels.get(current);
  if (!ch) return;
  const nodes = ch.messages.map(messageNode);
  if (ch.hasOlder) nodes.unshift(el("div", { className: "older", textContent: "scroll up for older messages" }));
  if (!ch.messages.length) nodes.push(el("p", { className: "muted center", textContent: "No messages yet. Say hi!" }));
  box.replaceChildren(...nodes);
  if (toBottom) box.scrollTop = box.scrollHeight;
}

function appendMessage(m) {
  const box = $("messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  box.querySelector(".center")?.remove();
  box.append(messageNode(m));
  if (atBottom || m.sender === me.user_id) box.scrollTop = box.scrollHeight;
}

// Infinite scroll: near the top, fetch the page before the oldest message held.
$("messages").addEventListener("scroll", async () => {
  const box = $("messages");
  const ch = channels.get(current);
  if (!ch || box.scrollTop > 60 || !ch.hasOlder || ch.loadingOlder) return;
  ch.loadingOlder = true;
  const channel = current;
  try {
    const oldest = ch.messages[0]?.seq;
    const page = await client.history(channel, oldest ? { before: oldest, limit: PAGE } : { limit: PAGE });
    ch.messages = [...page.messages.filter((m) => !oldest || m.seq < oldest), ...ch.messages];
    ch.hasOlder = page.has_more;
    if (channel === current) {
      const fromBottom = box.scrollHeight - box.scrollTop;
      renderMessages(false);
      box.scrollTop = box.scrollHeight - fromBottom;
    }
  } finally {
    ch.loadingOlder = false;
  }
});

let reading = null;
async function readCurrent() {
  const ch = channels.get(current);
  const last = ch?.messages.at(-1);
  if (!last || client.unread(current) === 0 || reading) return;
  reading = client.markRead(current, last.seq).catch(() => undefined);
  await reading;
  reading = null;
}
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") void readCurrent();
  void client?.setStatus(document.visibilityState === "visible" ? "online" : "away").catch(() => undefined);
});

function clearTyping(channel, user) {
  typing.get(channel)?.delete(user);
  renderTyping();
}

function renderTyping() {
  const who = [...(typing.get(current) ?? [])].map(shortId);
  $("typing").textContent = who.length === 0 ? "" : `${who.join(", ")} ${who.length === 1 ? "is" : "are"} typing…`;
}

// ---- composing ---------------------------------------------------------------------------------

$("text").addEventListener("input", () => {
  if (current) client.setTyping(current, $("text").value.trim() !== "");
});

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const body = $("text").value.trim();
  if (!body || !current) return;
  $("text").value = "";
  client.setTyping(current, false);
  client.send(current, body).catch((err) => {
    $("typing").textContent = `not sent: ${err.message}`;
  });
});

$("new-channel").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("nc-error").textContent = "";
  const kind = $("nc-kind").value;
  const members = $("nc-members").value.split(/[\s,]+/).filter(Boolean);
  try {
    const id = await client.createChannel(kind, members, $("nc-name").value.trim() || undefined);
    $("nc-members").value = "";
    $("nc-name").value = "";
    await refreshChannels();
    select(id);
  } catch (err) {
    $("nc-error").textContent = err instanceof MqchatError ? err.message.replace(/^[a-z_]+: /, "") : String(err);
  }
});

// ---- resume a session kept from an earlier visit -----------------------------------------------

const kept = JSON.parse(localStorage.getItem(SESSION_KEY) ?? "null");
if (kept && kept.login.expires_at * 1000 > Date.now() + 60_000) {
  const c = new MqchatClient({ apiUrl: "", deviceId: deviceId(), storage: localStorage, syncLimit: PAGE });
  await c.useSession(kept.login);
  start(c, { user_id: kept.login.user_id, username: kept.username }).catch(() => {
    localStorage.removeItem(SESSION_KEY);
    location.reload();
  });
}
