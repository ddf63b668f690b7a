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
/** The reactions offered on every message (any emoji is accepted; these keep the bar small). */
const REACTIONS = ["👍", "❤️", "😂", "🎉"];

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
/** channel id → { info (inbox entry), hasOlder, loadingOlder, unread }; messages come from client.view() */
const channels = new Map();
/** server id → { server, channels: server channel[] } */
const servers = new Map();
/** The composer's context: replying to a message, or editing one of yours. */
let context = null; // { mode: "reply" | "edit", seq }
const presence = new Map();
const typing = new Map(); // channel → Set(user)
let current = null;

function shortId(user) {
  if (me && user === me.user_id) return "you";
  return user.length > 10 ? `${user.slice(0, 4)}…${user.slice(-4)}` : user;
}

function channelTitle(info) {
  if (info.kind === "server") {
    for (const { server, channels: list } of servers.values()) {
      const c = list.find((x) => x.channel_id === info.channel_id);
      if (c) return `${server.name} › ${c.name ?? "channel"}`;
    }
    return info.name ?? "channel";
  }
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
    keepSession(login, username);
    await start(c, { user_id: login.user_id, username });
  } catch (err) {
    $("auth-error").textContent = err instanceof MqchatError ? err.message.replace(/^[a-z_]+: /, "") : String(err);
  }
}

$("auth-form").addEventListener("submit", (e) => { e.preventDefault(); void authenticate(false); });
$("signup").addEventListener("click", () => void authenticate(true));
function keepSession(login, username) {
  localStorage.setItem(SESSION_KEY, JSON.stringify({ login, username }));
}

$("logout").addEventListener("click", async () => {
  localStorage.removeItem(SESSION_KEY);
  await client?.logout().catch(() => client?.disconnect());
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
  // Rotated tokens (refreshed before expiry) replace the kept ones, or the next visit could not resume.
  client.on("session", (login) => keepSession(login, me.username));
  client.on("reset", ({ channel, messages }) => {
    const ch = ensure(channel);
    ch.hasOlder = (messages[0]?.seq ?? 1) > 1;
    if (channel === current) renderMessages(true);
  });
  client.on("message", (m) => {
    ensure(m.channel);
    if (m.channel !== current) return;
    clearTyping(m.channel, m.sender);
    if (m.kind !== "text") return; // edits, reactions, ...: an "update" follows
    const view = client.view(m.channel).find((v) => v.message.seq === m.seq);
    if (view) appendMessage(view);
    if (document.visibilityState === "visible") void readCurrent();
  });
  client.on("update", ({ channel, seq }) => {
    if (channel !== current) return;
    const node = $("messages").querySelector(`.msg[data-seq="${seq}"]`);
    const view = client.view(channel).find((v) => v.message.seq === seq);
    if (node && view) node.replaceWith(messageNode(view));
  });
  client.on("server", () => void refreshChannels());
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
    ch = { info: null, hasOlder: false, loadingOlder: false, unread: 0 };
    channels.set(channel, ch);
  }
  return ch;
}

async function refreshServers() {
  const list = await client.api.myServers();
  servers.clear();
  await Promise.all(list.map(async (server) => {
    servers.set(server.server_id, { server, channels: await client.api.serverChannels(server.server_id) });
  }));
}

async function refreshChannels() {
  const [inbox] = await Promise.all([client.inbox(), refreshServers()]);
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
  const item = (id, title) => {
    const ch = channels.get(id);
    const info = ch.info;
    const other = info.kind === "direct" ? info.members.find((m) => m !== me.user_id) : null;
    const li = el("li", { className: id === current ? "active" : "", title: id },
      other ? el("span", { className: `dot ${presence.get(other) ?? "offline"}` }) : el("span", { className: "kind", textContent: "#" }),
      el("span", { className: "name", textContent: title }));
    if (ch.unread > 0 && id !== current) li.append(el("span", { className: "badge", textContent: String(ch.unread) }));
    li.dataset.channel = id;
    li.addEventListener("click", () => select(id));
    return li;
  };
  const held = order.filter((id) => channels.get(id)?.info);
  $("channels").replaceChildren(...held.filter((id) => channels.get(id).info.kind !== "server")
    .map((id) => item(id, channelTitle(channels.get(id).info))));
  // Servers → their channels (those you can see), in the server's order.
  $("servers").replaceChildren(...[...servers.values()].map(({ server, channels: list }) => {
    const li = el("li", { className: `server${server.server_id === currentServer() ? " open" : ""}`, title: server.server_id },
      el("span", { className: "kind", textContent: "◆" }), el("span", { className: "name", textContent: server.name }));
    li.dataset.server = server.server_id;
    li.addEventListener("click", () => {
      const first = list.find((c) => channels.get(c.channel_id)?.info);
      if (first) select(first.channel_id);
      else showServer(server.server_id);
    });
    const sub = el("ul", { className: "channels sub" },
      ...list.filter((c) => channels.get(c.channel_id)?.info).map((c) => item(c.channel_id, c.name ?? "channel")));
    return el("div", {}, li, sub);
  }));
}

let shownServer = null;
function currentServer() {
  if (current) {
    for (const [id, { channels: list }] of servers) if (list.some((c) => c.channel_id === current)) return id;
  }
  return shownServer;
}

/** A server without a channel you can see yet: its tools only. */
function showServer(id) {
  if (current) {
    client.setTyping(current, false);
    client.unwatchTyping(current);
  }
  current = null;
  shownServer = id;
  $("text").disabled = true;
  $("send").disabled = true;
  $("attach").disabled = true;
  $("messages").replaceChildren(el("p", { className: "muted center", textContent: "No channel here yet: add one above." }));
  $("conv-title").textContent = servers.get(id)?.server.name ?? "server";
  $("conv-members").replaceChildren();
  renderServerTools();
  renderChannels();
}

function renderServerTools() {
  const id = currentServer();
  $("server-tools").hidden = !id;
  $("sv-code").textContent = "";
}

function select(id) {
  if (current && current !== id) {
    client.setTyping(current, false);
    client.unwatchTyping(current);
  }
  current = id;
  shownServer = null;
  setContext(null);
  client.watchTyping(id);
  $("text").disabled = false;
  $("send").disabled = false;
  $("attach").disabled = false;
  renderChannels();
  renderHeader();
  renderServerTools();
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
    shortId(m))),
  // Channel objects carry the first 20 members; more are paged by members_next_cursor.
  ...(ch.info.members_next_cursor ? [el("span", { className: "more", textContent: "+ more" })] : []));
}

const mentions = (text) => text.replace(/<@([A-Za-z0-9_-]+)>/g, (_, u) => `@${shortId(u)}`);

/** One message with its folded state: body (or tombstone), quote, thread mark, reactions, actions. */
function messageNode({ message: m, state }) {
  const mine = m.sender === me.user_id;
  const time = new Date(m.ts).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const meta = el("div", { className: "meta" }, el("span", { textContent: mine ? "you" : shortId(m.sender) }),
    el("span", { textContent: time }));
  if (state.edited_ts) meta.append(el("span", { className: "edited", textContent: "(edited)" }));
  if (state.pinned) meta.append(el("span", { textContent: "📌" }));
  const node = el("div", { className: `msg${mine ? " mine" : ""}${state.deleted ? " deleted" : ""}` }, meta);
  node.dataset.seq = String(m.seq);
  const ref = m.reply_to ?? m.thread;
  if (ref) {
    const quoted = client.messageState(current, ref);
    const text = quoted ? (quoted.deleted ? "deleted message" : mentions(quoted.body)) : `message ${ref}`;
    node.append(el("div", { className: "quote", textContent: `${m.thread ? "↳ thread: " : "↪ "}${text.slice(0, 80)}` }));
  }
  if (m.attachment && !state.deleted) node.append(attachmentNode(client.resolveAttachment(m.attachment)));
  if (state.deleted || state.body || m.kind !== "file") {
    node.append(state.deleted
      ? el("div", { className: "tombstone", textContent: "message deleted" })
      : el("div", { className: "body", textContent: mentions(state.body) }));
  }
  if (state.reply_count) {
    node.append(el("div", { className: "replies", textContent: `${state.reply_count} repl${state.reply_count === 1 ? "y" : "ies"}` }));
  }
  if (state.deleted) return node;
  const chips = el("div", { className: "reactions" }, ...state.reactions.map((r) => {
    const chip = el("button", { type: "button", className: `reaction${r.me ? " me" : ""}`, textContent: `${r.emoji} ${r.count}` });
    chip.dataset.emoji = r.emoji;
    chip.addEventListener("click", () => void toggleReaction(m.seq, r.emoji, r.me));
    return chip;
  }));
  const actions = el("div", { className: "actions" }, ...REACTIONS.map((emoji) => {
    const b = el("button", { type: "button", className: "react", textContent: emoji, title: `react ${emoji}` });
    b.dataset.emoji = emoji;
    b.addEventListener("click", () => {
      const mineAlready = state.reactions.some((r) => r.emoji === emoji && r.me);
      void toggleReaction(m.seq, emoji, mineAlready);
    });
    return b;
  }), action("reply", () => setContext({ mode: "reply", seq: m.seq, text: state.body })));
  if (mine) {
    actions.append(action("edit", () => { setContext({ mode: "edit", seq: m.seq, text: state.body }); $("text").value = state.body; }),
      action("delete", () => void client.deleteMessage(current, m.seq).catch(showError)));
  }
  node.append(chips, actions);
  return node;
}

/** An image's thumbnail (or the image) linking to the file; any other file: its name and size. */
function attachmentNode(att) {
  const link = el("a", { className: "attachment", href: att.url, target: "_blank", rel: "noopener" });
  if (att.content_type.startsWith("image/")) {
    link.append(el("img", { src: att.thumbnail_url ?? att.url, alt: att.filename, title: att.filename }));
  } else {
    link.textContent = `📄 ${att.filename} (${Math.max(1, Math.round(att.size / 1024))} KiB)`;
  }
  return link;
}

function action(name, fn) {
  const b = el("button", { type: "button", className: `link act-${name}`, textContent: name });
  b.addEventListener("click", fn);
  return b;
}

function toggleReaction(seq, emoji, mine) {
  const channel = current;
  return (mine ? client.unreact(channel, seq, emoji) : client.react(channel, seq, emoji)).catch(showError);
}

function showError(err) {
  $("typing").textContent = `not sent: ${err instanceof MqchatError ? err.message.replace(/^[a-z_]+: /, "") : String(err)}`;
}

function setContext(ctx) {
  if (context?.mode === "edit" && !ctx) $("text").value = "";
  context = ctx;
  $("context").hidden = !ctx;
  if (ctx) {
    $("context-text").textContent = `${ctx.mode === "edit" ? "Editing" : "Replying to"}: ${mentions(ctx.text).slice(0, 60)}`;
    $("text").focus();
  }
}
$("context-cancel").addEventListener("click", () => setContext(null));
$("text").addEventListener("keydown", (e) => { if (e.key === "Escape") setContext(null); });

function renderMessages(toBottom) {
  const box = $("messages");
  const ch = channels.get(current);
  if (!ch) return;
  const views = client.view(current);
  const nodes = views.map(messageNode);
  if (ch.hasOlder) nodes.unshift(el("div", { className: "older", textContent: "scroll up for older messages" }));
  if (!views.length) nodes.push(el("p", { className: "muted center", textContent: "No messages yet. Say hi!" }));
  box.replaceChildren(...nodes);
  if (toBottom) box.scrollTop = box.scrollHeight;
}

function appendMessage(view) {
  const box = $("messages");
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  box.querySelector(".center")?.remove();
  box.append(messageNode(view));
  if (atBottom || view.message.sender === me.user_id) box.scrollTop = box.scrollHeight;
}

// Infinite scroll: near the top, fetch the page before the oldest message held.
$("messages").addEventListener("scroll", async () => {
  const box = $("messages");
  const ch = channels.get(current);
  if (!ch || box.scrollTop > 60 || !ch.hasOlder || ch.loadingOlder) return;
  ch.loadingOlder = true;
  const channel = current;
  try {
    const page = await client.loadOlder(channel, PAGE);
    ch.hasOlder = page.hasMore;
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
let readAgain = false;
async function readCurrent() {
  if (reading) {
    readAgain = true; // messages came while a marker was on its way: mark again after it
    return;
  }
  if (!current || client.unread(current) === 0) return;
  reading = client.markRead(current).catch(() => undefined);
  await reading;
  reading = null;
  if (readAgain) {
    readAgain = false;
    if (document.visibilityState === "visible") void readCurrent();
  }
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
  const ctx = context;
  setContext(null);
  const sent = ctx?.mode === "edit" ? client.edit(current, ctx.seq, body)
    : client.send(current, body, ctx?.mode === "reply" ? { replyTo: ctx.seq } : {});
  sent.catch(showError);
});

$("attach").addEventListener("click", () => $("file").click());
$("file").addEventListener("change", () => {
  const file = $("file").files?.[0];
  $("file").value = "";
  if (!file || !current) return;
  const ctx = context;
  const caption = ctx?.mode === "edit" ? "" : $("text").value.trim();
  $("text").value = "";
  setContext(null);
  client.sendFile(current, file, { filename: file.name, contentType: file.type || "application/octet-stream",
    ...(caption ? { caption } : {}), ...(ctx?.mode === "reply" ? { replyTo: ctx.seq } : {}) }).catch(showError);
});

// ---- servers -------------------------------------------------------------------------------------

const serverError = (err) => {
  $("sv-error").textContent = err instanceof MqchatError ? err.message.replace(/^[a-z_]+: /, "") : String(err);
};

$("server-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("sv-error").textContent = "";
  const name = $("sv-name").value.trim();
  if (!name) return;
  try {
    const server = await client.api.createServer(name);
    $("sv-name").value = "";
    await refreshChannels();
    showServer(server.server_id);
  } catch (err) { serverError(err); }
});

$("sv-join").addEventListener("click", async () => {
  $("sv-error").textContent = "";
  const code = $("sv-name").value.trim();
  if (!code) return;
  try {
    await client.api.acceptInvite(code);
    $("sv-name").value = "";
    await refreshChannels(); // the client subscribes to the server's channels on its "server" event
  } catch (err) { serverError(err); }
});

$("sc-create").addEventListener("click", async () => {
  const sid = currentServer();
  const name = $("sc-name").value.trim();
  if (!sid || !name) return;
  try {
    const channel = await client.api.createServerChannel(sid, name);
    $("sc-name").value = "";
    await client.refreshChannels();
    await refreshChannels();
    select(channel.channel_id);
  } catch (err) { showError(err); }
});

$("sv-invite").addEventListener("click", async () => {
  const sid = currentServer();
  if (!sid) return;
  try {
    const invite = await client.api.createInvite(sid, { expires_in_s: 7 * 24 * 3600 });
    $("sv-code").textContent = `invite code: ${invite.code}`;
    void navigator.clipboard?.writeText(invite.code).catch(() => undefined);
  } catch (err) { showError(err); }
});

// ---- search --------------------------------------------------------------------------------------

$("search-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const q = $("search").value.trim();
  const box = $("results");
  if (!q) { box.hidden = true; return; }
  box.hidden = false;
  box.replaceChildren(el("p", { className: "muted", textContent: "Searching…" }));
  try {
    const page = await client.search(q, { limit: 20 });
    const close = action("close", () => { box.hidden = true; });
    if (!page.hits.length) { box.replaceChildren(close, el("p", { className: "muted", textContent: "No messages found." })); return; }
    box.replaceChildren(close, ...page.hits.map((hit) => {
      const info = channels.get(hit.message.channel)?.info;
      const row = el("div", { className: "hit" },
        el("div", { className: "meta", textContent: `${info ? channelTitle(info) : "channel"} · ${shortId(hit.message.sender)}` }));
      const snippet = el("div", { className: "snippet" });
      snippet.innerHTML = hit.snippet; // HTML-escaped by the server, with <mark> around matches
      row.append(snippet);
      row.addEventListener("click", () => { box.hidden = true; if (info) select(hit.message.channel); });
      return row;
    }));
  } catch (err) {
    box.replaceChildren(el("p", { className: "error", textContent: err instanceof MqchatError ? err.message : String(err) }));
  }
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
const fresh = kept && kept.login.expires_at * 1000 > Date.now() + 60_000;
if (kept && (fresh || kept.login.refresh_token)) {
  const c = new MqchatClient({ apiUrl: "", deviceId: deviceId(), storage: localStorage, syncLimit: PAGE });
  const resume = async () => {
    await c.useSession(kept.login);
    if (!fresh) keepSession(await c.refresh(), kept.username); // an expired access token: refresh it first
    await start(c, { user_id: kept.login.user_id, username: kept.username });
  };
  resume().catch(() => {
    localStorage.removeItem(SESSION_KEY);
    location.reload();
  });
}
