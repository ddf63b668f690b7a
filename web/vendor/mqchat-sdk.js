// mqchat SDK 0.1.0, generated from sdk/js/src by `npm run bundle`: do not edit.
var __defProp = Object.defineProperty;
var __defNormalProp = (obj, key, value) => key in obj ? __defProp(obj, key, { enumerable: true, configurable: true, writable: true, value }) : obj[key] = value;
var __publicField = (obj, key, value) => __defNormalProp(obj, typeof key !== "symbol" ? key + "" : key, value);

// src/client.ts
import mqtt from "mqtt";

// src/backoff.ts
var DEFAULT_BACKOFF = Object.freeze({ baseMs: 500, capMs: 3e4, maxAttempts: 0 });
function backoffBound(attempt, policy = DEFAULT_BACKOFF) {
  return Math.min(policy.capMs, policy.baseMs * 2 ** Math.min(Math.max(attempt, 0), 64));
}
function backoffDelay(attempt, rand, policy = DEFAULT_BACKOFF) {
  return Math.min(Math.max(rand, 0), 1) * backoffBound(attempt, policy);
}

// src/emitter.ts
var Emitter = class {
  constructor() {
    __publicField(this, "listeners", /* @__PURE__ */ new Map());
  }
  /** Listen; returns the function that stops listening. */
  on(name, listener) {
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, set = /* @__PURE__ */ new Set());
    set.add(listener);
    return () => this.off(name, listener);
  }
  off(name, listener) {
    this.listeners.get(name)?.delete(listener);
  }
  emit(name, event) {
    for (const l of [...this.listeners.get(name) ?? []]) {
      try {
        l(event);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
};

// src/errors.ts
var ERROR_CODES = Object.freeze({
  // Send acks (dev/{me}/{device}/ack).
  payload_too_large: { action: "fix", description: "the payload is over 16 KiB" },
  malformed: { action: "fix", description: "not a JSON object, or a field of the wrong type" },
  unknown_field: { action: "fix", description: "a field the protocol version does not define" },
  unsupported_version: { action: "upgrade", description: "`v` is not a version the server speaks" },
  unknown_kind: { action: "fix", description: "the message kind is not defined" },
  body_too_long: { action: "fix", description: "the body is over 4,000 characters" },
  invalid_cmid: { action: "fix", description: "the client message id is not 1-64 of [A-Za-z0-9_.:-]" },
  empty_body: { action: "fix", description: "a text or edit whose body is empty or only white space" },
  missing_field: { action: "fix", description: "the kind needs a field that is absent (the target of an edit, ...)" },
  field_not_allowed: { action: "fix", description: "the kind does not take a field that is present" },
  invalid_target: { action: "fix", description: "target, reply_to or thread is not a seq (an integer >= 1)" },
  invalid_emoji: { action: "fix", description: "not a short Unicode emoji sequence nor a :shortcode:" },
  target_deleted: { action: "drop", description: "the message changed, quoted or replied under is deleted" },
  too_many_reactions: { action: "drop", description: "the message already carries 20 distinct emoji" },
  invalid_thread: { action: "fix", description: "thread names a reply: reply under its root" },
  timed_out: { action: "drop", description: "a moderator timed you out in this server (retryAfterMs: how long)" },
  slow_mode: { action: "retry", description: "the channel's slow mode: retried with the same cmid after retryAfterMs" },
  not_member: { action: "drop", description: "you are not a member of the channel" },
  unavailable: { action: "retry", description: "the store is temporarily unavailable (HTTP 503 too)" },
  upload_not_found: { action: "drop", description: "no such upload (never made, deleted unused, or its message deleted; also an upload not visible to you): upload the file again" },
  upload_not_yours: { action: "fix", description: "another user's upload, or one made for another channel: upload the file yourself, to this channel" },
  upload_incomplete: { action: "fix", description: "the upload was not completed: PUT the bytes, then complete it, then send" },
  upload_expired: { action: "drop", description: "the upload was not sent within objects.unused_ttl_s: upload the file again" },
  upload_used: { action: "drop", description: "the upload is already in another message (another cmid): one upload, one message" },
  // HTTP API.
  invalid_request: { action: "fix", description: "body or query failed validation" },
  unauthorized: { action: "relogin", description: "no bearer token" },
  token_expired: { action: "relogin", description: "the token has expired" },
  token_not_yet_valid: { action: "retry", description: "the token is not valid yet (clock skew)" },
  token_bad_signature: { action: "relogin", description: "the token is badly signed" },
  token_bad_audience: { action: "relogin", description: "the token is for another audience" },
  token_bad_issuer: { action: "relogin", description: "the token is from another issuer" },
  token_bad_claims: { action: "relogin", description: "the token's claims are invalid" },
  token_malformed: { action: "relogin", description: "the token cannot be read" },
  token_revoked: { action: "relogin", description: "the device was logged out: log in again" },
  refresh_invalid: { action: "relogin", description: "an unknown, expired or revoked refresh token: log in again" },
  refresh_reused: { action: "relogin", description: "a spent refresh token was presented again: the login is ended" },
  rate_limited: { action: "retry", description: "too many requests: retry after retryAfterMs" },
  ack_timeout: { action: "retry", description: "a REST send got no ack in time: retry with the same cmid" },
  epoch_mismatch: { action: "drop", description: "a read marker for an epoch the channel is not in: sync, then mark again" },
  body_too_large: { action: "fix", description: "the request body is over http.max_body_bytes" },
  bad_request: { action: "fix", description: "a malformed request" },
  bad_credentials: { action: "fix", description: "unknown username or wrong password" },
  username_taken: { action: "fix", description: "the username is taken" },
  unknown_users: { action: "fix", description: "a member does not exist" },
  channel_not_found: { action: "drop", description: "no such channel, or you are not a member" },
  direct_channel: { action: "fix", description: "a direct channel's members cannot change" },
  forbidden: { action: "drop", description: "not allowed for you (a server permission: the message names it)" },
  server_not_found: { action: "drop", description: "no such server, or you are not in it" },
  role_not_found: { action: "fix", description: "no such role in the server" },
  member_not_found: { action: "fix", description: "no such member of the server" },
  invite_not_found: { action: "fix", description: "no such invite" },
  user_not_found: { action: "fix", description: "no such user" },
  role_hierarchy: { action: "fix", description: "the role or member is at or above your highest role, or is the owner" },
  banned: { action: "drop", description: "you are banned from the server" },
  owner_cannot_leave: { action: "fix", description: "the owner must transfer the server first" },
  server_channel: { action: "fix", description: "server channels' members come by invite" },
  invite_revoked: { action: "drop", description: "the invite was revoked" },
  invite_expired: { action: "drop", description: "the invite has expired" },
  invite_used_up: { action: "drop", description: "the invite has no uses left" },
  unknown_permission: { action: "fix", description: "a permission name that does not exist" },
  invalid: { action: "fix", description: "a request the directory refuses as malformed" },
  not_server_channel: { action: "fix", description: "a server-channel operation on a direct or group channel" },
  conflict: { action: "fix", description: "a uniqueness rule was violated" },
  empty_query: { action: "fix", description: "a search without terms" },
  query_too_long: { action: "fix", description: "the search query is too long" },
  too_many_terms: { action: "fix", description: "the search query has too many terms" },
  unknown_filter: { action: "fix", description: "a search filter that does not exist" },
  invalid_filter: { action: "fix", description: "a search filter's value is invalid, or given twice" },
  invalid_limit: { action: "fix", description: "a page size out of range" },
  invalid_cursor: { action: "fix", description: "a cursor from another listing, or one that does not decode" },
  cursor_mismatch: { action: "fix", description: "a search cursor used with another query or filters" },
  search_disabled: { action: "fix", description: "search is turned off on this server" },
  seq_out_of_range: { action: "fix", description: "a read marker beyond the channel's last seq" },
  external_issuer: { action: "fix", description: "login is disabled: tokens come from an identity provider" },
  not_found: { action: "drop", description: "no such message in the channel's epoch (sync), or no such route" },
  method_not_allowed: { action: "fix", description: "wrong method for the route" },
  // Uploads (docs/attachments.md).
  upload_too_large: { action: "fix", description: "the file is over objects.max_upload_bytes, or the body is over what the upload URL allows" },
  forbidden_type: { action: "fix", description: "a content type the server does not accept (objects.allowed_types)" },
  invalid_size: { action: "fix", description: "the declared size is not positive" },
  invalid_filename: { action: "fix", description: "nothing usable left of the file name, or it is too long" },
  size_mismatch: { action: "fix", description: "the stored bytes are not as many as declared (they were deleted)" },
  type_mismatch: { action: "fix", description: "the stored bytes are not of the declared type (they were deleted)" },
  url_invalid: { action: "fix", description: "a signed URL that was changed or is for another operation" },
  url_expired: { action: "drop", description: "a signed URL past its expiry: ask for a fresh one" },
  object_not_found: { action: "drop", description: "the file was deleted since the URL was made" },
  // The connection (see reconnect.ts for the decision table).
  connect_refused: { action: "fix", description: "the broker refused the connection for good" },
  network: { action: "retry", description: "the server could not be reached" },
  not_connected: { action: "retry", description: "the client is not connected" },
  closed: { action: "fix", description: "the client was closed" },
  not_logged_in: { action: "relogin", description: "call login() first" }
});
function errorInfo(code) {
  return ERROR_CODES[code] ?? { action: "fix", description: "unknown error code" };
}
var MqchatError = class extends Error {
  constructor(code, message, opts = {}) {
    super(`${code}: ${message}`);
    __publicField(this, "code");
    __publicField(this, "action");
    /** The HTTP status, for errors from the HTTP API. */
    __publicField(this, "status");
    /** From `Retry-After`, when the server sent one. */
    __publicField(this, "retryAfterMs");
    this.name = "MqchatError";
    this.code = code;
    this.action = errorInfo(code).action;
    this.status = opts.status;
    this.retryAfterMs = opts.retryAfterMs;
  }
  /** True when retrying the same request can help. */
  get retryable() {
    return this.action === "retry";
  }
};

// src/types.ts
var TARGETED_KINDS = /* @__PURE__ */ new Set(["edit", "delete", "reaction", "pin", "unpin"]);

// src/fold.ts
var MAX_REACTION_EMOJI = 20;
function react(m, user, emoji, op) {
  const users = m.reactions.find(([e]) => e === emoji)?.[1];
  let reactions;
  if (op === "add") {
    if (users?.has(user) || !users && m.reactions.length >= MAX_REACTION_EMOJI) return m;
    reactions = users ? m.reactions.map(([e, u]) => e === emoji ? [e, /* @__PURE__ */ new Set([...u, user])] : [e, u]) : [...m.reactions, [emoji, /* @__PURE__ */ new Set([user])]];
  } else if (op === "remove" && users?.has(user)) {
    reactions = m.reactions.map(([e, u]) => e === emoji ? [e, new Set([...u].filter((x) => x !== user))] : [e, u]).filter(([, u]) => u.size > 0);
  } else {
    return m;
  }
  return { ...m, reactions };
}
function applyEvent(states, e) {
  if (TARGETED_KINDS.has(e.kind)) {
    const t = e.target != null ? states.get(e.target) : void 0;
    if (!t || t.deleted) return [];
    let next = t;
    if (e.kind === "edit") next = { ...t, body: e.body, edited_ts: e.ts };
    else if (e.kind === "delete") next = { ...t, deleted: true, body: "", reactions: [], pinned: false };
    else if (e.kind === "reaction" && e.emoji != null) next = react(t, e.sender, e.emoji, e.op);
    else if (e.kind === "pin" || e.kind === "unpin") next = { ...t, pinned: e.kind === "pin" };
    if (next === t) return [];
    states.set(t.seq, next);
    return [t.seq];
  }
  states.set(e.seq, {
    seq: e.seq,
    sender: e.sender,
    kind: e.kind,
    ts: e.ts,
    body: e.body,
    thread: e.thread ?? null,
    edited_ts: null,
    deleted: false,
    pinned: false,
    reactions: [],
    reply_count: 0,
    last_reply_ts: null
  });
  const root = e.thread != null ? states.get(e.thread) : void 0;
  if (!root) return [e.seq];
  states.set(root.seq, { ...root, reply_count: root.reply_count + 1, last_reply_ts: e.ts });
  return [e.seq, root.seq];
}
function fold(events, states = /* @__PURE__ */ new Map()) {
  for (const e of events) applyEvent(states, e);
  return states;
}
function stateOut(s, me) {
  return {
    body: s.body,
    edited_ts: s.edited_ts,
    deleted: s.deleted,
    pinned: s.pinned,
    reactions: s.reactions.map(([emoji, users]) => ({ emoji, count: users.size, me: me !== null && users.has(me) })),
    reply_count: s.reply_count,
    last_reply_ts: s.last_reply_ts
  };
}
var ChannelFold = class {
  constructor() {
    __publicField(this, "events", []);
    __publicField(this, "states", /* @__PURE__ */ new Map());
    /** Seqs of the window's messages (not events), ascending. */
    __publicField(this, "order", []);
  }
  /** The epoch of the window (0: empty). */
  get epoch() {
    return this.events[0]?.epoch ?? 0;
  }
  /** The first and last seq held (0 when empty). */
  get firstSeq() {
    return this.events[0]?.seq ?? 0;
  }
  get lastSeq() {
    return this.events.at(-1)?.seq ?? 0;
  }
  /** Replace the window with `events` (a latest page, after a new channel or an epoch reset). */
  reset(events) {
    this.events = [...events];
    this.refold();
  }
  /**
   * Append the next event (the client delivers them gap-free, in order). An event that does not
   * continue the window (another epoch, a gap) starts a new window with it. Returns the seqs of
   * the messages whose state changed.
   */
  append(e) {
    const last = this.events.at(-1);
    if (last && (e.epoch !== last.epoch || e.seq !== last.seq + 1)) {
      if (e.epoch === last.epoch && e.seq <= last.seq) return [];
      this.reset([e]);
      return TARGETED_KINDS.has(e.kind) ? [] : [e.seq];
    }
    this.events.push(e);
    if (!TARGETED_KINDS.has(e.kind)) this.order.push(e.seq);
    return applyEvent(this.states, e);
  }
  /**
   * Prepend an older page (ascending, ending right below the window). Messages of it may be named
   * by events already held, so the whole window is folded again. Returns false (and changes
   * nothing) when the page does not end where the window starts.
   */
  prepend(older) {
    const first = this.events[0];
    const page = older.filter((m) => !first || m.epoch === first.epoch && m.seq < first.seq);
    if (!page.length) return older.length === 0;
    if (first && page.at(-1).seq !== first.seq - 1) return false;
    this.events = [...page, ...this.events];
    this.refold();
    return true;
  }
  /** The folded state of message `seq`, if the window holds it. */
  state(seq) {
    return this.states.get(seq);
  }
  /** The raw event at `seq`, if held. */
  event(seq) {
    const first = this.firstSeq;
    return first ? this.events[seq - first] : void 0;
  }
  /** Every message of the window (not the events changing them) with its state for `me`, in seq order. */
  view(me) {
    const out = [];
    for (const seq of this.order) {
      const message = this.event(seq);
      const s = this.states.get(seq);
      if (message && s) out.push({ message, state: stateOut(s, me) });
    }
    return out;
  }
  refold() {
    this.states = fold(this.events);
    this.order = this.events.filter((e) => !TARGETED_KINDS.has(e.kind)).map((e) => e.seq);
  }
};

// src/http.ts
function byteLength(data) {
  return "byteLength" in data ? data.byteLength : data.size;
}
var enc = encodeURIComponent;
function query(params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== void 0) qs.set(k, String(v));
  const text = qs.toString();
  return text ? `?${text}` : "";
}
var HttpApi = class {
  /**
   * @param baseUrl the API's address, e.g. `http://127.0.0.1:8080` (`""`: the page's own origin).
   * @param fetchImpl an injectable `fetch` (default: the global one).
   */
  constructor(baseUrl, fetchImpl = (...a) => globalThis.fetch(...a)) {
    __publicField(this, "baseUrl", baseUrl);
    __publicField(this, "fetchImpl", fetchImpl);
    /** The bearer token sent with every request but signup and login. */
    __publicField(this, "token", null);
    /**
     * Called once when a request is refused with `token_expired`; when it resolves (having set a
     * fresh {@link token}) the request is made again. The client sets it to its token refresh.
     */
    __publicField(this, "renewToken", null);
  }
  /**
   * Any endpoint, for those this class has no method for yet (new endpoints land here first).
   *
   * @throws MqchatError with the server's error code, or `network`.
   */
  async request(method, path, body, opts = {}) {
    try {
      return await this.requestOnce(method, path, body, opts);
    } catch (err) {
      if (!(err instanceof MqchatError) || err.code !== "token_expired" || opts.auth === false || !this.renewToken) {
        throw err;
      }
      await this.renewToken();
      return this.requestOnce(method, path, body, opts);
    }
  }
  async requestOnce(method, path, body, opts) {
    const headers = { accept: "application/json" };
    if (body !== void 0) headers["content-type"] = "application/json";
    if (opts.auth !== false) {
      if (!this.token) throw new MqchatError("not_logged_in", "log in first");
      headers.authorization = `Bearer ${this.token}`;
    }
    let res;
    try {
      const init = { method, headers };
      if (body !== void 0) init.body = JSON.stringify(body);
      res = await this.fetchImpl(`${this.baseUrl}${path}`, init);
    } catch (err) {
      throw new MqchatError("network", `${method} ${path}: ${String(err)}`);
    }
    if (res.status === 204) return void 0;
    const text = await res.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
    }
    if (!res.ok) {
      const error = data?.error;
      const retryAfter = Number(res.headers.get("retry-after"));
      const opts2 = { status: res.status };
      if (retryAfter > 0) opts2.retryAfterMs = retryAfter * 1e3;
      throw new MqchatError(
        error?.code ?? (res.status >= 500 ? "unavailable" : "invalid_request"),
        error?.message ?? `${method} ${path}: HTTP ${res.status}`,
        opts2
      );
    }
    return data;
  }
  signup(username, password) {
    return this.request("POST", "/v1/users", { username, password }, { auth: false });
  }
  login(username, password, deviceId) {
    return this.request("POST", "/v1/login", { username, password, device_id: deviceId }, { auth: false });
  }
  /** Exchange a refresh token for a new pair; the one presented is spent (a second use ends the login). */
  refresh(refreshToken) {
    return this.request("POST", "/v1/token/refresh", { refresh_token: refreshToken }, { auth: false });
  }
  /** End this device's login: its refresh tokens stop working, its access tokens are refused. */
  logout() {
    return this.request("POST", "/v1/logout");
  }
  /** End the login of every device of the user (a lost phone). */
  logoutAll() {
    return this.request("POST", "/v1/logout/all");
  }
  /** A group channel (any members) or a direct one (exactly one other member; unique per pair). */
  createChannel(kind, members, name) {
    return this.request("POST", "/v1/channels", { kind, members, ...name ? { name } : {} });
  }
  addMember(channel, userId) {
    return this.request("POST", `/v1/channels/${encodeURIComponent(channel)}/members`, { user_id: userId });
  }
  removeMember(channel, userId) {
    return this.request(
      "DELETE",
      `/v1/channels/${encodeURIComponent(channel)}/members/${encodeURIComponent(userId)}`
    );
  }
  /**
   * One page of a channel's members by user id: `limit` 1–500 (default 100), `cursor` the
   * `next_cursor` of the previous page or a channel object's `members_next_cursor`. A page of a
   * server channel may be short, even empty, while `next_cursor` is set: keep going until it is null.
   */
  channelMembers(channel, q = {}) {
    return this.request("GET", `/v1/channels/${enc(channel)}/members${query({ ...q })}`);
  }
  /** Every member of a channel (user ids, ascending), all pages. */
  async allChannelMembers(channel) {
    const out = [];
    let cursor;
    do {
      const page = await this.channelMembers(channel, { limit: 500, ...cursor ? { cursor } : {} });
      out.push(...page.members);
      cursor = page.next_cursor ?? void 0;
    } while (cursor);
    return out;
  }
  /** Every channel you can see, all pages. */
  async channels() {
    const out = [];
    let cursor;
    do {
      const page = await this.channelPage({ limit: 500, ...cursor ? { cursor } : {} });
      out.push(...page.channels);
      cursor = page.next_cursor ?? void 0;
    } while (cursor);
    return out;
  }
  channelPage(q = {}) {
    return this.request("GET", `/v1/me/channels${query({ ...q })}`);
  }
  history(channel, q = {}) {
    const params = new URLSearchParams();
    if (q.before !== void 0) params.set("before", String(q.before));
    if (q.after !== void 0) params.set("after", String(q.after));
    if (q.limit !== void 0) params.set("limit", String(q.limit));
    const qs = params.toString();
    return this.request("GET", `/v1/channels/${encodeURIComponent(channel)}/messages${qs ? `?${qs}` : ""}`);
  }
  markRead(channel, seq, epoch) {
    return this.request(
      "POST",
      `/v1/channels/${encodeURIComponent(channel)}/read`,
      epoch === void 0 ? { seq } : { seq, epoch }
    );
  }
  /** One page of the inbox (most recent activity first); `badge` and `mentions` count every channel. */
  inboxPage(q = {}) {
    return this.request("GET", `/v1/me/inbox${query({ ...q })}`);
  }
  /** The whole inbox, every page. */
  async inbox() {
    const first = await this.inboxPage({ limit: 500 });
    let cursor = first.next_cursor;
    while (cursor) {
      const page = await this.inboxPage({ limit: 500, cursor });
      first.channels.push(...page.channels);
      cursor = page.next_cursor;
    }
    first.next_cursor = null;
    return first;
  }
  sync(channels, limit) {
    return this.request("POST", "/v1/sync", limit === void 0 ? { channels } : { channels, limit });
  }
  async onlineCount(channel) {
    return (await this.request(
      "GET",
      `/v1/channels/${encodeURIComponent(channel)}/presence`
    )).online;
  }
  // ---- rich messages ----------------------------------------------------------------------------
  /** A send over HTTP with the device's token (the MQTT payload; answered with the bridge's ack). */
  send(channel, payload) {
    return this.request("POST", `/v1/channels/${enc(channel)}/messages`, payload);
  }
  /** A thread: the root with its state, and its replies above `after` (default 0), in seq order. */
  thread(channel, root, q = {}) {
    return this.request("GET", `/v1/channels/${enc(channel)}/threads/${root}${query({ ...q })}`);
  }
  /** The channel's pinned messages with their state, in seq order. */
  pins(channel) {
    return this.request("GET", `/v1/channels/${enc(channel)}/pins`);
  }
  // ---- attachments (docs/attachments.md) ---------------------------------------------------------
  /**
   * An absolute address for a URL the server handed out: a path (the `local` object store) is
   * relative to the API's base URL; a full URL (S3, `objects.public_url`) is returned as is.
   */
  resolveUrl(url) {
    return /^[a-z][a-z0-9+.-]*:/i.test(url) ? url : `${this.baseUrl}${url}`;
  }
  /** Start an upload to a channel you are a member of: the record and the signed upload request. */
  createUpload(channel, file) {
    return this.request(
      "POST",
      "/v1/uploads",
      { channel, filename: file.filename, content_type: file.contentType, size: file.size }
    );
  }
  /**
   * Make the signed upload request of {@link createUpload} exactly as given (method, URL, headers;
   * no token): the bytes go to the object store.
   *
   * @throws MqchatError with the store's code (`url_expired`, `upload_too_large`, ...), or `network`.
   */
  async putUpload(started, data) {
    const { method, url, headers } = started.upload;
    let res;
    try {
      res = await this.fetchImpl(this.resolveUrl(url), { method, headers, body: data });
    } catch (err) {
      throw new MqchatError("network", `${method} upload: ${String(err)}`);
    }
    if (res.ok) {
      await res.arrayBuffer().catch(() => void 0);
      return;
    }
    const text = await res.text().catch(() => "");
    let code;
    let message;
    try {
      const error = JSON.parse(text).error;
      code = error?.code;
      message = error?.message;
    } catch {
    }
    const retryAfter = Number(res.headers.get("retry-after"));
    const opts = { status: res.status };
    if (retryAfter > 0) opts.retryAfterMs = retryAfter * 1e3;
    const fallback = res.status === 413 ? "upload_too_large" : res.status === 429 ? "rate_limited" : res.status >= 500 ? "unavailable" : "url_invalid";
    throw new MqchatError(code ?? fallback, message ?? `${method} upload: HTTP ${res.status}`, opts);
  }
  /** Have the server verify the uploaded bytes (real size, type by magic bytes): the upload is then `ready`. */
  completeUpload(uploadId) {
    return this.request("POST", `/v1/uploads/${enc(uploadId)}/complete`);
  }
  /**
   * Fresh signed URLs of an attachment (members of its channel once it is in a message; its
   * uploader once it is complete). Resolve `url`/`thumbnail_url` with {@link resolveUrl}.
   */
  download(uploadId) {
    return this.request("GET", `/v1/uploads/${enc(uploadId)}/download`);
  }
  // ---- search -------------------------------------------------------------------------------------
  /** Messages matching `q` in the channels you can see now, newest first (docs/search.md). */
  search(q, opts = {}) {
    return this.request("GET", `/v1/search${query({ q, ...opts })}`);
  }
  // ---- servers ------------------------------------------------------------------------------------
  createServer(name, opts = {}) {
    return this.request("POST", "/v1/servers", { name, ...opts });
  }
  server(id) {
    return this.request("GET", `/v1/servers/${enc(id)}`);
  }
  editServer(id, changes) {
    return this.request("PATCH", `/v1/servers/${enc(id)}`, changes);
  }
  deleteServer(id) {
    return this.request("DELETE", `/v1/servers/${enc(id)}`);
  }
  async myServers() {
    return (await this.request("GET", "/v1/me/servers")).servers;
  }
  discoverableServers(q = {}) {
    return this.request("GET", `/v1/servers${query({ discoverable: true, ...q })}`);
  }
  members(server, q = {}) {
    return this.request("GET", `/v1/servers/${enc(server)}/members${query({ ...q })}`);
  }
  joinServer(server) {
    return this.request("POST", `/v1/servers/${enc(server)}/join`);
  }
  leaveServer(server) {
    return this.request("POST", `/v1/servers/${enc(server)}/leave`);
  }
  transferServer(server, userId) {
    return this.request("POST", `/v1/servers/${enc(server)}/transfer`, { user_id: userId });
  }
  /** Channels of a server you can see. */
  async serverChannels(server) {
    return (await this.request("GET", `/v1/servers/${enc(server)}/channels`)).channels;
  }
  createServerChannel(server, name, opts = {}) {
    return this.request("POST", `/v1/servers/${enc(server)}/channels`, { name, ...opts });
  }
  editServerChannel(channel, changes) {
    return this.request("PATCH", `/v1/channels/${enc(channel)}`, changes);
  }
  deleteServerChannel(channel) {
    return this.request("DELETE", `/v1/channels/${enc(channel)}`);
  }
  // ---- roles and permissions ------------------------------------------------------------------------
  /** Highest position first, `@everyone` last. */
  async roles(server) {
    return (await this.request("GET", `/v1/servers/${enc(server)}/roles`)).roles;
  }
  createRole(server, name, opts = {}) {
    return this.request("POST", `/v1/servers/${enc(server)}/roles`, { name, ...opts });
  }
  editRole(server, role, changes) {
    return this.request("PATCH", `/v1/servers/${enc(server)}/roles/${enc(role)}`, changes);
  }
  deleteRole(server, role) {
    return this.request("DELETE", `/v1/servers/${enc(server)}/roles/${enc(role)}`);
  }
  addMemberRole(server, userId, role) {
    return this.request("PUT", `/v1/servers/${enc(server)}/members/${enc(userId)}/roles/${enc(role)}`);
  }
  removeMemberRole(server, userId, role) {
    return this.request("DELETE", `/v1/servers/${enc(server)}/members/${enc(userId)}/roles/${enc(role)}`);
  }
  async overwrites(channel) {
    return (await this.request("GET", `/v1/channels/${enc(channel)}/permissions`)).overwrites;
  }
  setOverwrite(channel, target, targetId, perms) {
    return this.request("PUT", `/v1/channels/${enc(channel)}/permissions/${target}/${enc(targetId)}`, perms);
  }
  deleteOverwrite(channel, target, targetId) {
    return this.request("DELETE", `/v1/channels/${enc(channel)}/permissions/${target}/${enc(targetId)}`);
  }
  /** Your effective permissions in any channel you can see. */
  myPermissions(channel) {
    return this.request("GET", `/v1/channels/${enc(channel)}/permissions/me`);
  }
  // ---- invites ------------------------------------------------------------------------------------
  createInvite(server, opts = {}) {
    return this.request("POST", `/v1/servers/${enc(server)}/invites`, opts);
  }
  async invites(server) {
    return (await this.request("GET", `/v1/servers/${enc(server)}/invites`)).invites;
  }
  previewInvite(code) {
    return this.request("GET", `/v1/invites/${enc(code)}`);
  }
  acceptInvite(code) {
    return this.request("POST", `/v1/invites/${enc(code)}/accept`);
  }
  revokeInvite(code) {
    return this.request("DELETE", `/v1/invites/${enc(code)}`);
  }
  // ---- moderation ---------------------------------------------------------------------------------
  kick(server, userId) {
    return this.request("DELETE", `/v1/servers/${enc(server)}/members/${enc(userId)}`);
  }
  async bans(server) {
    return (await this.request("GET", `/v1/servers/${enc(server)}/bans`)).bans;
  }
  ban(server, userId, reason) {
    return this.request(
      "PUT",
      `/v1/servers/${enc(server)}/bans/${enc(userId)}`,
      reason === void 0 ? void 0 : { reason }
    );
  }
  unban(server, userId) {
    return this.request("DELETE", `/v1/servers/${enc(server)}/bans/${enc(userId)}`);
  }
  timeout(server, userId, untilMs) {
    return this.request("PUT", `/v1/servers/${enc(server)}/members/${enc(userId)}/timeout`, { until_ms: untilMs });
  }
  clearTimeout(server, userId) {
    return this.request("DELETE", `/v1/servers/${enc(server)}/members/${enc(userId)}/timeout`);
  }
  auditLog(server, q = {}) {
    return this.request("GET", `/v1/servers/${enc(server)}/audit-log${query({ ...q })}`);
  }
  // ---- users --------------------------------------------------------------------------------------
  user(id) {
    return this.request("GET", `/v1/users/${enc(id)}`);
  }
  /** Exact username, ignoring case. */
  userByName(username) {
    return this.request("GET", `/v1/users/by-name/${enc(username)}`);
  }
  me() {
    return this.request("GET", "/v1/me");
  }
  /** A field left out keeps its value; `null` clears it. */
  editMe(changes) {
    return this.request("PATCH", "/v1/me", changes);
  }
};

// src/outbox.ts
function dueEntries(entries, nowMs, ackTimeoutMs) {
  const due = [];
  for (const e of entries) if (e.sentMs === 0 || nowMs - e.sentMs >= ackTimeoutMs) due.push(e);
  return due.sort((a, b) => a.createdMs - b.createdMs);
}
var Outbox = class {
  /**
   * @param storage where entries are persisted.
   * @param key the storage key (the client uses `mqchat:outbox:{user}:{device}`).
   */
  constructor(storage, key) {
    __publicField(this, "storage", storage);
    __publicField(this, "key", key);
    __publicField(this, "entries", /* @__PURE__ */ new Map());
    __publicField(this, "writing", Promise.resolve());
  }
  /** Load what a previous run left (call once, before use). Unreadable contents are dropped. */
  async load() {
    const raw = await this.storage.getItem(this.key);
    if (!raw) return;
    try {
      const list = JSON.parse(raw);
      for (const e of list) if (typeof e?.cmid === "string" && typeof e.channel === "string") this.entries.set(e.cmid, e);
    } catch {
      await this.storage.removeItem(this.key);
    }
  }
  get size() {
    return this.entries.size;
  }
  get(cmid) {
    return this.entries.get(cmid);
  }
  all() {
    return [...this.entries.values()].sort((a, b) => a.createdMs - b.createdMs);
  }
  async add(entry) {
    this.entries.set(entry.cmid, entry);
    await this.persist();
  }
  /** Record a publish (not persisted on its own: a restart resends everything anyway). */
  markSent(cmid, nowMs) {
    const e = this.entries.get(cmid);
    if (e) {
      e.sentMs = nowMs;
      e.attempts += 1;
    }
  }
  /** Mark every entry as never sent: after a reconnect, everything is republished at once. */
  resetSent() {
    for (const e of this.entries.values()) e.sentMs = 0;
  }
  due(nowMs, ackTimeoutMs) {
    return dueEntries(this.entries.values(), nowMs, ackTimeoutMs);
  }
  async remove(cmid) {
    const e = this.entries.get(cmid);
    if (e) {
      this.entries.delete(cmid);
      await this.persist();
    }
    return e;
  }
  persist() {
    const snapshot = JSON.stringify(this.all());
    this.writing = this.writing.then(async () => {
      if (snapshot === "[]") await this.storage.removeItem(this.key);
      else await this.storage.setItem(this.key, snapshot);
    });
    return this.writing;
  }
};

// src/presence.ts
function randomBytes(n) {
  const out = new Uint8Array(n);
  const cryptoApi = globalThis.crypto;
  if (cryptoApi?.getRandomValues) return cryptoApi.getRandomValues(out);
  for (let i = 0; i < n; i++) out[i] = Math.floor(Math.random() * 256);
  return out;
}
function connId(bytes = randomBytes) {
  return [...bytes(6)].map((b) => b.toString(16).padStart(2, "0")).join("");
}
function presencePayload(status, conn, ts) {
  const body = { status, ts, conn };
  return JSON.stringify(body);
}
function willPayload(conn) {
  return presencePayload("offline", conn, 0);
}
function heartbeatInterval(refreshMs) {
  return typeof refreshMs === "number" && Number.isFinite(refreshMs) && refreshMs > 0 ? refreshMs : null;
}

// src/reconnect.ts
var CONNACK = Object.freeze({
  1: "protocol",
  2: "identifier_rejected",
  3: "server_unavailable",
  4: "bad_credentials",
  5: "not_authorized"
});
var TERMINAL = /* @__PURE__ */ new Set(["protocol", "identifier_rejected"]);
var CREDENTIALS = /* @__PURE__ */ new Set(["bad_credentials", "not_authorized"]);
var RETRYABLE = /* @__PURE__ */ new Set([
  "server_unavailable",
  "connection_refused",
  "connection_lost",
  "timeout"
]);
function decide(failure, input) {
  const backoff = input.backoff ?? DEFAULT_BACKOFF;
  if (TERMINAL.has(failure)) return { action: "stop", failure, reason: `${failure}: retrying cannot help` };
  if (CREDENTIALS.has(failure)) {
    if (input.tokenExpired && !input.relogged) return { action: "relogin" };
    return { action: "stop", failure, reason: `${failure} with a token that has not expired (or was just renewed)` };
  }
  if (backoff.maxAttempts && input.attempt + 1 >= backoff.maxAttempts) {
    return { action: "stop", failure, reason: `${failure}: gave up after ${input.attempt + 1} attempts` };
  }
  return { action: "retry", delayMs: backoffDelay(input.attempt, input.rand, backoff) };
}
function classify(err) {
  const code = err?.code;
  if (typeof code === "number") return CONNACK[code] ?? "protocol";
  if (code === "ECONNREFUSED") return "connection_refused";
  if (code === "ETIMEDOUT" || code === "timeout") return "timeout";
  return "connection_lost";
}
var TOKEN_EXPIRY_MARGIN_MS = 6e4;
function tokenExpired(expiresAtS, nowMs) {
  return nowMs >= expiresAtS * 1e3 - TOKEN_EXPIRY_MARGIN_MS;
}

// src/sequence.ts
function classifyIncoming(cursor, msg) {
  if (!cursor) return "unknown";
  if (msg.epoch !== cursor.epoch) return "reset";
  if (msg.seq <= cursor.lastSeq) return "duplicate";
  if (msg.seq === cursor.lastSeq + 1) return "append";
  return "gap";
}
var ChannelTracker = class {
  constructor() {
    __publicField(this, "cursors", /* @__PURE__ */ new Map());
    __publicField(this, "held", /* @__PURE__ */ new Map());
    __publicField(this, "syncing", /* @__PURE__ */ new Set());
  }
  cursor(channel) {
    return this.cursors.get(channel);
  }
  channels() {
    return [...this.cursors.keys()];
  }
  /** `(channel, epoch, last_seq)` of every channel held, for `POST /v1/sync`. */
  syncCursors(only) {
    const names = only ? [...only] : [...this.cursors.keys()];
    const out = [];
    for (const channel of names) {
      const c = this.cursors.get(channel);
      if (c) out.push({ channel, epoch: c.epoch, last_seq: c.lastSeq });
    }
    return out;
  }
  drop(channel) {
    this.cursors.delete(channel);
    this.held.delete(channel);
    this.syncing.delete(channel);
  }
  /** A message from `ch/{channel}`. */
  offer(msg) {
    const verdict = classifyIncoming(this.cursors.get(msg.channel), msg);
    if (verdict === "duplicate") return { deliver: [], needSync: false };
    if (verdict === "append" && !this.syncing.has(msg.channel)) {
      this.cursors.set(msg.channel, { epoch: msg.epoch, lastSeq: msg.seq });
      return { deliver: [msg, ...this.drain(msg.channel)], needSync: false };
    }
    let held = this.held.get(msg.channel);
    if (!held) this.held.set(msg.channel, held = /* @__PURE__ */ new Map());
    held.set(msg.seq, msg);
    const start = !this.syncing.has(msg.channel);
    this.syncing.add(msg.channel);
    return { deliver: [], needSync: start };
  }
  /** Mark a channel as being synced (held messages wait for {@link applySync}). */
  beginSync(channel) {
    this.syncing.add(channel);
  }
  /** Fold one channel of a sync answer in. Call {@link endSync} when its paging is over. */
  applySync(ch) {
    if (ch.status === "ok") {
      const cursor = this.cursors.get(ch.channel) ?? { epoch: ch.epoch, lastSeq: 0 };
      const deliver = [];
      for (const m of ch.messages) {
        if (m.epoch === cursor.epoch && m.seq === cursor.lastSeq + 1) {
          cursor.lastSeq = m.seq;
          deliver.push(m);
        }
      }
      this.cursors.set(ch.channel, cursor);
      return { deliver, replace: null, more: ch.has_more };
    }
    const last = ch.messages.at(-1);
    this.cursors.set(ch.channel, { epoch: ch.epoch, lastSeq: last ? last.seq : ch.last_seq });
    const held = this.held.get(ch.channel);
    if (held) {
      for (const [seq, m] of held) if (m.epoch !== ch.epoch) held.delete(seq);
    }
    return { deliver: [], replace: ch.messages, more: false };
  }
  /**
   * The sync of a channel is over: release held messages that now follow the cursor. Returns them
   * and whether a gap remains (the caller syncs again).
   */
  endSync(channel) {
    this.syncing.delete(channel);
    const deliver = this.drain(channel);
    const held = this.held.get(channel);
    const needSync = !!held && held.size > 0;
    if (needSync) this.syncing.add(channel);
    return { deliver, needSync };
  }
  /**
   * Give up on a sync that failed: held messages stay held, and the next live message of the
   * channel finds the gap again and asks for a new sync.
   */
  abandonSync(channel) {
    this.syncing.delete(channel);
  }
  drain(channel) {
    const held = this.held.get(channel);
    const cursor = this.cursors.get(channel);
    if (!held || !cursor) return [];
    const out = [];
    for (const [seq, m] of held) if (m.epoch !== cursor.epoch || seq <= cursor.lastSeq) held.delete(seq);
    for (let next = held.get(cursor.lastSeq + 1); next; next = held.get(cursor.lastSeq + 1)) {
      held.delete(next.seq);
      cursor.lastSeq = next.seq;
      out.push(next);
    }
    if (held.size === 0) this.held.delete(channel);
    return out;
  }
};

// src/storage.ts
var MemoryStorage = class {
  constructor() {
    __publicField(this, "items", /* @__PURE__ */ new Map());
  }
  getItem(key) {
    return this.items.get(key) ?? null;
  }
  setItem(key, value) {
    this.items.set(key, value);
  }
  removeItem(key) {
    this.items.delete(key);
  }
};

// src/topics.ts
var ID = /^[A-Za-z0-9_-]{1,64}$/;
function checkId(what, id) {
  if (!ID.test(id)) throw new TypeError(`${what} ${JSON.stringify(id)}: expected 1-64 characters from [A-Za-z0-9_-]`);
  return id;
}
var topics = {
  send: (user, device, channel) => `in/${user}/${device}/${channel}`,
  channel: (channel) => `ch/${channel}`,
  ack: (user, device) => `dev/${user}/${device}/ack`,
  userEvents: (user) => `user/${user}/events`,
  devicePresence: (user, device) => `presence/${user}/${device}`,
  userPresence: (user) => `presence/${user}`,
  typing: (channel, user) => `typing/${channel}/${user}`,
  typingFilter: (channel) => `typing/${channel}/+`,
  /** In-band token refresh: the bare JWT, to the broker only (never delivered). */
  auth: (user, device) => `auth/${user}/${device}`
};
function parseTopic(topic) {
  const p = topic.split("/");
  if (p[0] === "ch" && p.length === 2 && p[1]) return { kind: "channel", channel: p[1] };
  if (p[0] === "dev" && p.length === 4 && p[3] === "ack") return { kind: "ack" };
  if (p[0] === "user" && p.length === 3 && p[2] === "events") return { kind: "userEvents" };
  if (p[0] === "presence" && p.length === 2 && p[1]) return { kind: "userPresence", user: p[1] };
  if (p[0] === "typing" && p.length === 3 && p[1] && p[2]) return { kind: "typing", channel: p[1], user: p[2] };
  return null;
}

// src/client.ts
var OUTBOX_TICK_MS = 1e3;
var TYPING_REFRESH_MS = 3e3;
var TYPING_EXPIRY_MS = 6e3;
var SUBSCRIBE_RETRIES = 5;
var SUBSCRIBE_RETRY_MS = 400;
var REFRESH_LEAD_MS = 5 * 6e4;
var REFRESH_RETRY_MS = 3e4;
function refreshDelay(remainingMs) {
  return Math.max(0, Math.max(remainingMs - REFRESH_LEAD_MS, remainingMs * 0.8));
}
function utf8(bytes) {
  if (typeof TextDecoder !== "undefined") return new TextDecoder().decode(bytes);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return decodeURIComponent(escape(binary));
}
var MqchatClient = class extends Emitter {
  constructor(options) {
    super();
    /** The HTTP API; `api.request()` reaches endpoints this class has no method for yet. */
    __publicField(this, "api");
    __publicField(this, "deviceId");
    __publicField(this, "session", null);
    __publicField(this, "password", null);
    __publicField(this, "storage");
    __publicField(this, "backoff");
    __publicField(this, "opts");
    __publicField(this, "random");
    __publicField(this, "now");
    __publicField(this, "outbox", null);
    __publicField(this, "tracker", new ChannelTracker());
    __publicField(this, "pending", /* @__PURE__ */ new Map());
    __publicField(this, "unreadState", /* @__PURE__ */ new Map());
    __publicField(this, "folds", /* @__PURE__ */ new Map());
    __publicField(this, "refreshTimer", null);
    __publicField(this, "refreshing", null);
    __publicField(this, "watchedPresence", /* @__PURE__ */ new Set());
    __publicField(this, "watchedTyping", /* @__PURE__ */ new Set());
    __publicField(this, "typingSent", /* @__PURE__ */ new Map());
    __publicField(this, "typingTimers", /* @__PURE__ */ new Map());
    __publicField(this, "mq", null);
    /** The connection id of the current connection (in its will and every presence publish). */
    __publicField(this, "conn", null);
    /** This device's status: published after CONNACK, by setStatus, and by every heartbeat. */
    __publicField(this, "presenceStatus", "online");
    __publicField(this, "heartbeatTimer", null);
    /** The connection the heartbeat runs for. */
    __publicField(this, "heartbeatOf", null);
    __publicField(this, "stateValue", "idle");
    __publicField(this, "attempt", 0);
    __publicField(this, "relogged", false);
    __publicField(this, "wanted", false);
    __publicField(this, "retryTimer", null);
    __publicField(this, "retryTimers", /* @__PURE__ */ new Set());
    __publicField(this, "outboxTimer", null);
    __publicField(this, "cmidCounter", 0);
    __publicField(this, "firstConnect", null);
    this.opts = options;
    this.deviceId = checkId("deviceId", options.deviceId);
    this.api = new HttpApi(options.apiUrl.replace(/\/+$/, ""), options.fetch);
    this.api.renewToken = async () => {
      if (!this.session?.refresh_token) throw new MqchatError("token_expired", "the token has expired");
      await this.refresh();
    };
    this.storage = options.storage ?? new MemoryStorage();
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
  }
  get state() {
    return this.stateValue;
  }
  /** The signed-in user's id (null before login). */
  get userId() {
    return this.session?.user_id ?? null;
  }
  // ---- accounts -------------------------------------------------------------------------------
  signup(username, password) {
    return this.api.signup(username, password);
  }
  /** Log this device in; the password stays in memory for re-login when the token expires. */
  async login(username, password) {
    const result = await this.api.login(username, password, this.deviceId);
    this.password = { username, password };
    await this.useSession(result);
    return result;
  }
  /** Use a login answer obtained elsewhere (e.g. kept from an earlier run, or your own identity provider). */
  async useSession(result) {
    if (this.session && this.session.user_id !== result.user_id) {
      throw new TypeError("this client belongs to another user: create a new client");
    }
    const changed = this.session !== null && this.session.token !== result.token;
    this.session = result;
    this.api.token = result.token;
    if (!this.outbox) {
      this.outbox = new Outbox(this.storage, `mqchat:outbox:${result.user_id}:${this.deviceId}`);
      await this.outbox.load();
    }
    this.scheduleRefresh();
    if (changed) this.emit("session", result);
  }
  /** The current session (the login answer, with tokens as rotated since); null before login. */
  get currentSession() {
    return this.session;
  }
  // ---- token lifecycle ------------------------------------------------------------------------
  /**
   * Exchange the refresh token for a new access token and refresh token now (the old refresh
   * token is spent), and hand the new access token to the live MQTT connection in-band on
   * `auth/{me}/{device}`, so it is not closed when the old one expires. Done automatically before
   * expiry (`autoRefresh`); concurrent calls share one request (a second use of the same refresh
   * token would end the login).
   *
   * @throws MqchatError `refresh_invalid` / `refresh_reused` / `token_revoked` (log in again), or a
   *   retryable `network`, `unavailable`, `rate_limited`.
   */
  refresh() {
    this.refreshing ?? (this.refreshing = this.doRefresh().finally(() => {
      this.refreshing = null;
    }));
    return this.refreshing;
  }
  async doRefresh() {
    const s = this.session;
    if (!s) throw new MqchatError("not_logged_in", "log in first");
    if (!s.refresh_token) throw new MqchatError("refresh_invalid", "this session has no refresh token: log in again");
    const pair = await this.api.refresh(s.refresh_token);
    const next = { ...s, token: pair.token, refresh_token: pair.refresh_token, expires_at: pair.expires_at };
    await this.useSession(next);
    const mq = this.mq;
    if (mq?.connected) {
      await this.publishAsync(mq, topics.auth(s.user_id, this.deviceId), pair.token, { qos: 1 }).catch(() => void 0);
    }
    return next;
  }
  scheduleRefresh(delayMs) {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    const s = this.session;
    if (!s?.refresh_token || this.opts.autoRefresh === false) return;
    const delay = delayMs ?? refreshDelay(s.expires_at * 1e3 - this.now());
    const timer = setTimeout(() => {
      this.refreshTimer = null;
      this.refresh().catch((err) => {
        const e = err instanceof MqchatError ? err : new MqchatError("network", String(err));
        if (e.retryable) {
          const left = (this.session?.expires_at ?? 0) * 1e3 - this.now();
          this.scheduleRefresh(Math.max(e.retryAfterMs ?? 1e3, Math.min(REFRESH_RETRY_MS, left / 4)));
        }
        this.emit("error", e);
      });
    }, Math.min(delay, 2 ** 31 - 1));
    timer.unref?.();
    this.refreshTimer = timer;
  }
  /**
   * Log this device out: disconnect cleanly, then end its login on the server (its refresh tokens
   * stop working, its access tokens are refused, the broker closes its other connections).
   */
  async logout() {
    await this.disconnect();
    const out = await this.api.logout();
    this.endSession();
    return out;
  }
  /** Log every device of the user out (a lost phone): the others are disconnected within ~1 s. */
  async logoutAll() {
    await this.disconnect();
    const out = await this.api.logoutAll();
    this.endSession();
    return out;
  }
  endSession() {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    this.password = null;
    this.api.token = null;
    if (this.session) this.session = { ...this.session, token: "", expires_at: 0 };
    delete this.session?.refresh_token;
  }
  // ---- connection -----------------------------------------------------------------------------
  /**
   * Connect and keep connected (the reconnect table applies to every later loss). Resolves once
   * connected, subscribed and synced; rejects if the client stops first.
   */
  connect() {
    if (!this.session) return Promise.reject(new MqchatError("not_logged_in", "log in first"));
    if (this.stateValue === "connected") return Promise.resolve();
    if (this.firstConnect) return this.firstConnect.promise;
    let settle;
    const done = new Promise((resolve, reject) => {
      settle = { resolve, reject };
    });
    this.firstConnect = { ...settle, promise: done };
    if (!this.wanted) {
      this.wanted = true;
      if (!this.refreshTimer) this.scheduleRefresh();
      this.attempt = 0;
      this.relogged = false;
      this.outboxTimer = setInterval(() => this.flushOutbox(), OUTBOX_TICK_MS);
      this.open();
    }
    return done;
  }
  /**
   * A clean disconnect: publishes `offline` (retained) on this device's presence topic first, as
   * docs/protocol.md asks, so no stale `online` outlives the connection; then DISCONNECT.
   * Unacked sends stay in the outbox for the next {@link connect}.
   */
  async disconnect() {
    this.wanted = false;
    this.stopTimers();
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    const mq = this.mq;
    const conn = this.conn;
    this.mq = null;
    this.conn = null;
    if (mq && this.session) {
      if (mq.connected && conn) {
        await this.publishAsync(
          mq,
          topics.devicePresence(this.session.user_id, this.deviceId),
          presencePayload("offline", conn, this.now()),
          { qos: 1, retain: true }
        ).catch(() => void 0);
      }
      await mq.endAsync().catch(() => void 0);
    }
    this.setState({ state: "idle" });
    this.firstConnect?.reject(new MqchatError("closed", "disconnect() was called"));
    this.firstConnect = null;
  }
  /**
   * Close the socket without DISCONNECT, as a lost network does (the broker publishes the last
   * will); the reconnect table then applies. For tests and demos.
   */
  dropConnection() {
    this.mq?.stream?.destroy();
  }
  stopTimers() {
    this.stopHeartbeat();
    if (this.retryTimer) clearTimeout(this.retryTimer);
    if (this.outboxTimer) clearInterval(this.outboxTimer);
    this.retryTimer = null;
    this.outboxTimer = null;
    for (const t of this.typingTimers.values()) clearTimeout(t);
    for (const t of this.retryTimers) clearTimeout(t);
    this.retryTimers.clear();
    this.typingTimers.clear();
  }
  setState(ev) {
    this.stateValue = ev.state;
    this.emit("state", ev);
  }
  open() {
    const session = this.session;
    if (!session || !this.wanted) return;
    this.setState({ state: "connecting" });
    const me = session.user_id;
    const url = this.opts.mqttUrl ?? session.mqtt.ws_url;
    const startedMs = this.now();
    const conn = connId();
    this.conn = conn;
    const mq = mqtt.connect(url, {
      clientId: `${me}:${this.deviceId}`,
      username: me,
      password: session.token,
      protocolVersion: 4,
      clean: true,
      keepalive: this.opts.keepaliveS ?? 30,
      connectTimeout: this.opts.connectTimeoutMs ?? 1e4,
      reconnectPeriod: 0,
      // the decision table below decides, not MQTT.js
      resubscribe: false,
      will: {
        topic: topics.devicePresence(me, this.deviceId),
        payload: willPayload(conn),
        qos: 1,
        retain: true
      }
    });
    this.mq = mq;
    let lastError = null;
    let connected = false;
    mq.on("error", (err) => {
      lastError = err;
    });
    mq.on("message", (topic, payload) => this.onMessage(topic, payload));
    mq.on("connect", () => {
      connected = true;
      this.publishPresence(mq, conn);
      this.startHeartbeat(mq, conn);
      void this.resume(mq);
    });
    mq.on("close", () => {
      if (this.heartbeatOf === mq) this.stopHeartbeat();
      if (this.mq !== mq) return;
      setTimeout(() => {
        if (this.mq !== mq) return;
        this.mq = null;
        mq.removeAllListeners("message");
        mq.end(true);
        let failure = connected ? "connection_lost" : classify(lastError);
        if (!connected && lastError === null && this.now() - startedMs >= (this.opts.connectTimeoutMs ?? 1e4)) failure = "timeout";
        this.onLost(failure, session.token);
      }, 0);
    });
  }
  /** @param usedToken the token the lost connection presented (a refresh may have replaced it since). */
  onLost(failure, usedToken) {
    if (!this.wanted || !this.session) return;
    if ((failure === "not_authorized" || failure === "bad_credentials") && usedToken !== void 0 && usedToken !== this.session.token && !this.relogged) {
      this.relogged = true;
      this.attempt += 1;
      this.setState({ state: "reconnecting", failure, delayMs: 0, reason: "token renewed: connecting with it" });
      this.open();
      return;
    }
    const decision = decide(failure, {
      attempt: this.attempt,
      tokenExpired: tokenExpired(this.session.expires_at, this.now()),
      relogged: this.relogged,
      rand: this.random(),
      backoff: this.backoff
    });
    this.attempt += 1;
    if (decision.action === "retry") {
      this.setState({ state: "reconnecting", failure, delayMs: decision.delayMs });
      this.retryTimer = setTimeout(() => this.open(), decision.delayMs);
    } else if (decision.action === "relogin") {
      void this.reloginThenOpen(failure);
    } else {
      this.stop(decision.failure, decision.reason);
    }
  }
  async reloginThenOpen(failure) {
    this.setState({ state: "reconnecting", failure, delayMs: 0, reason: "token expired: logging in again" });
    try {
      let fresh = null;
      if (this.opts.relogin) fresh = await this.opts.relogin();
      else if (this.session?.refresh_token) {
        try {
          fresh = await this.refresh();
        } catch (err) {
          if (!(err instanceof MqchatError) || err.retryable || !this.password) throw err;
        }
      }
      if (!fresh && this.password) {
        fresh = await this.api.login(this.password.username, this.password.password, this.deviceId);
      }
      if (!fresh) throw new MqchatError("token_expired", "the token expired and there is no way to log in again");
      await this.useSession(fresh);
      this.relogged = true;
      this.open();
    } catch (err) {
      const e = err instanceof MqchatError ? err : new MqchatError("network", String(err));
      if (e.retryable) this.onLost("connection_lost");
      else this.stop(failure, `re-login failed: ${e.message}`);
    }
  }
  stop(failure, reason) {
    this.wanted = false;
    this.stopTimers();
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    this.setState({ state: "stopped", failure, reason });
    this.firstConnect?.reject(new MqchatError(failure === "timeout" ? "network" : "connect_refused", reason));
    this.firstConnect = null;
  }
  /** Connected: subscribe first, then sync (docs/sync.md "On (re)connect"), then resend the outbox. */
  async resume(mq) {
    const session = this.session;
    if (!session) return;
    const me = session.user_id;
    try {
      const inbox = await this.api.inbox();
      const channels = inbox.channels.map((c) => c.channel_id);
      this.takeUnread(inbox);
      const filters = [
        topics.ack(me, this.deviceId),
        topics.userEvents(me),
        ...channels.map(topics.channel),
        ...[...this.watchedPresence].map(topics.userPresence),
        ...[...this.watchedTyping].map(topics.typingFilter)
      ];
      const subscriptions = {};
      for (const topic of filters) subscriptions[topic] = { qos: topic.startsWith("typing/") ? 0 : 1 };
      const granted = await mq.subscribeAsync(subscriptions);
      if (this.mq !== mq) return;
      const refused = new Set(granted.filter((g) => g.qos === 128 && g.topic.startsWith("ch/")).map((g) => g.topic.slice(3)));
      for (const c of this.tracker.channels()) if (!channels.includes(c)) this.forget(c);
      await this.syncChannels(channels);
      if (this.mq !== mq) return;
      this.attempt = 0;
      this.relogged = false;
      this.outbox?.resetSent();
      this.setState({ state: "connected" });
      this.flushOutbox();
      for (const c of channels) this.emitUnread(c);
      for (const c of refused) this.joinChannel(c, 1);
      this.firstConnect?.resolve();
      this.firstConnect = null;
    } catch (err) {
      if (this.mq !== mq) return;
      this.mq = null;
      mq.removeAllListeners("message");
      mq.end(true);
      const refusedToken = err instanceof MqchatError && err.action === "relogin";
      this.onLost(refusedToken ? "not_authorized" : "connection_lost");
    }
  }
  /** Sync `channels` until every one is complete, folding answers into the tracker. */
  async syncChannels(channels) {
    let want = channels;
    const touched = new Set(channels);
    for (const c of want) this.tracker.beginSync(c);
    let failed = false;
    try {
      while (want.length) {
        const known = this.tracker.syncCursors(want);
        const answer = await this.api.sync(known, this.opts.syncLimit ?? 200);
        const next = [];
        for (const ch of answer.channels) {
          if (!touched.has(ch.channel)) {
            if (this.tracker.cursor(ch.channel)) continue;
            touched.add(ch.channel);
            this.tracker.beginSync(ch.channel);
          }
          if (this.applySync(ch)) next.push(ch.channel);
        }
        for (const c of answer.removed) this.forget(c);
        want = next;
      }
    } catch (err) {
      failed = true;
      throw err;
    } finally {
      for (const c of touched) this.finishSync(c, !failed);
    }
  }
  applySync(ch) {
    const applied = this.tracker.applySync(ch);
    if (applied.replace) {
      this.foldOf(ch.channel).reset(applied.replace);
      const u = this.unreadState.get(ch.channel);
      const last = applied.replace.at(-1)?.count_seq;
      if (u && last !== void 0) u.lastCount = Math.max(u.lastCount, last);
      this.emit("reset", {
        channel: ch.channel,
        status: ch.status === "new" ? "new" : "reset",
        epoch: ch.epoch,
        messages: applied.replace
      });
    }
    for (const m of applied.deliver) this.deliver(m);
    return applied.more;
  }
  /**
   * Release held messages that now follow the cursor. A gap still open is filled again, unless
   * the fill just failed: then the next live message of the channel (or the next reconnect's
   * sync) tries again, so a server that is down is not hammered.
   */
  finishSync(channel, refill) {
    const after = this.tracker.endSync(channel);
    for (const m of after.deliver) this.deliver(m);
    if (!after.needSync) return;
    if (refill) void this.fillGap(channel);
    else this.tracker.abandonSync(channel);
  }
  /**
   * A gap in the live stream: fetch `GET /v1/channels/{id}/messages?after={lastSeq}` page by page
   * (docs/sync.md); a channel without a cursor, or whose epoch changed, goes through sync instead.
   */
  async fillGap(channel) {
    try {
      const cursor = this.tracker.cursor(channel);
      if (cursor && !await this.fillFromHistory(channel, cursor.epoch)) return;
      await this.syncChannels([channel]);
    } catch (err) {
      this.emit("error", err instanceof MqchatError ? err : new MqchatError("network", String(err)));
    }
  }
  /** Returns true when the epoch changed (the caller syncs the channel). */
  async fillFromHistory(channel, epoch) {
    this.tracker.beginSync(channel);
    let done = false;
    try {
      for (; ; ) {
        const lastSeq = this.tracker.cursor(channel)?.lastSeq ?? 0;
        const page = await this.api.history(channel, { after: lastSeq, limit: 200 });
        if (page.epoch !== epoch) return true;
        const more = this.applySync({
          channel,
          status: "ok",
          epoch,
          last_seq: page.last_seq,
          has_more: page.has_more,
          messages: page.messages
        });
        if (!more) break;
      }
      done = true;
      return false;
    } finally {
      if (done) this.finishSync(channel, true);
      else this.tracker.abandonSync(channel);
    }
  }
  /**
   * Subscribe to a channel just joined, then sync it (subscribe first, as on connect). The broker
   * learns of a new membership within `broker.membership_cache_s` (1 s by default), so a refused
   * SUBSCRIBE (0x80) is retried a few times. Joining marked earlier history read, which only the
   * server knows: the unread counts are then taken from it.
   */
  joinChannel(channel, attempt = 0) {
    const mq = this.mq;
    if (!mq) return;
    mq.subscribe(topics.channel(channel), { qos: 1 }, (err, granted) => {
      if (this.mq !== mq) return;
      const refused = !!err || granted?.[0]?.qos === 128;
      if (refused && attempt < SUBSCRIBE_RETRIES) {
        const timer = setTimeout(() => {
          this.retryTimers.delete(timer);
          this.joinChannel(channel, attempt + 1);
        }, SUBSCRIBE_RETRY_MS * (attempt + 1));
        this.retryTimers.add(timer);
        return;
      }
      void this.fillGap(channel).then(() => this.refreshUnread()).catch(() => void 0);
    });
  }
  forget(channel) {
    this.tracker.drop(channel);
    this.unreadState.delete(channel);
    this.folds.delete(channel);
    this.mq?.unsubscribe(topics.channel(channel));
  }
  // ---- incoming -------------------------------------------------------------------------------
  onMessage(topic, payload) {
    const parsed = parseTopic(topic);
    if (!parsed) return;
    let data;
    try {
      data = JSON.parse(utf8(payload));
    } catch {
      return;
    }
    if (typeof data !== "object" || data === null) return;
    switch (parsed.kind) {
      case "channel": {
        const offer = this.tracker.offer(data);
        for (const m of offer.deliver) this.deliver(m);
        if (offer.needSync) void this.fillGap(parsed.channel);
        break;
      }
      case "ack":
        void this.onAck(data);
        break;
      case "userEvents":
        this.onUserEvent(data);
        break;
      case "userPresence": {
        const p = data;
        if (p.status) this.emit("presence", { user: parsed.user, status: p.status, last_seen: p.last_seen ?? 0 });
        break;
      }
      case "typing": {
        if (parsed.user === this.userId) break;
        const typing = data.typing === true;
        const key = `${parsed.channel}/${parsed.user}`;
        const old = this.typingTimers.get(key);
        if (old) clearTimeout(old);
        this.typingTimers.delete(key);
        if (typing) {
          this.typingTimers.set(key, setTimeout(() => {
            this.typingTimers.delete(key);
            this.emit("typing", { channel: parsed.channel, user: parsed.user, typing: false });
          }, TYPING_EXPIRY_MS));
        }
        this.emit("typing", { channel: parsed.channel, user: parsed.user, typing });
        break;
      }
    }
  }
  foldOf(channel) {
    let f = this.folds.get(channel);
    if (!f) this.folds.set(channel, f = new ChannelFold());
    return f;
  }
  deliver(m) {
    const u = this.unreadState.get(m.channel) ?? { lastCount: 0, readCount: 0, readSeq: 0, mentions: 0 };
    this.unreadState.set(m.channel, u);
    const counts = !TARGETED_KINDS.has(m.kind);
    const count = m.count_seq ?? (counts ? u.lastCount + 1 : u.lastCount);
    u.lastCount = Math.max(u.lastCount, count);
    if (counts && m.sender === this.userId) {
      u.readSeq = Math.max(u.readSeq, m.seq);
      u.readCount = Math.max(u.readCount, count);
    } else if (counts && m.seq > u.readSeq && this.userId && m.body.includes(`<@${this.userId}>`)) {
      u.mentions += 1;
    }
    const f = this.foldOf(m.channel);
    const changed = f.append(m);
    this.emit("message", m);
    for (const seq of changed) {
      const state = f.state(seq);
      const message = f.event(seq);
      if (seq === m.seq || !state || !message) continue;
      this.emit("update", { channel: m.channel, seq, message, state: stateOut(state, this.userId), cause: m });
    }
    if (counts) this.emitUnread(m.channel);
  }
  /** Move the read marker of `channel` to `seq`, given the server's unread count there. */
  takeRead(channel, seq, unread, mentions) {
    const u = this.unreadState.get(channel) ?? { lastCount: unread, readCount: 0, readSeq: 0, mentions: 0 };
    const atMarker = this.folds.get(channel)?.event(seq)?.count_seq;
    u.readSeq = Math.max(u.readSeq, seq);
    u.readCount = Math.max(u.readCount, atMarker ?? u.lastCount - unread);
    u.lastCount = Math.max(u.lastCount, u.readCount + unread);
    u.mentions = mentions;
    this.unreadState.set(channel, u);
    this.emitUnread(channel);
  }
  emitUnread(channel) {
    const u = this.unreadState.get(channel);
    if (!u) return;
    this.emit("unread", {
      channel,
      unread: Math.max(0, u.lastCount - u.readCount),
      mentions: u.mentions,
      badge: this.badge()
    });
  }
  takeUnread(inbox) {
    for (const c of inbox.channels) {
      const u = this.unreadState.get(c.channel_id);
      const last = c.last_message?.count_seq ?? c.unread;
      this.unreadState.set(c.channel_id, {
        lastCount: Math.max(last, u?.lastCount ?? 0),
        readCount: Math.max(last - c.unread, u?.readCount ?? 0),
        readSeq: Math.max(c.read_seq, u?.readSeq ?? 0),
        mentions: c.mentions
      });
    }
  }
  /** Fetch unread and mention counts of every channel from the server (`unread` events follow). */
  async refreshUnread() {
    const inbox = await this.api.inbox();
    this.takeUnread(inbox);
    for (const c of inbox.channels) this.emitUnread(c.channel_id);
    return inbox;
  }
  /** Unread messages over all channels, as far as this client knows. */
  badge() {
    let total = 0;
    for (const u of this.unreadState.values()) total += Math.max(0, u.lastCount - u.readCount);
    return total;
  }
  /** The unread count of one channel, as far as this client knows. */
  unread(channel) {
    const u = this.unreadState.get(channel);
    return u ? Math.max(0, u.lastCount - u.readCount) : 0;
  }
  async onAck(ack) {
    this.emit("ack", ack);
    if (ack.cmid === null || !this.outbox) return;
    const waiting = this.pending.get(ack.cmid);
    if (ack.ok) {
      await this.outbox.remove(ack.cmid);
      this.pending.delete(ack.cmid);
      waiting?.resolve(ack);
      return;
    }
    const wait = ack.error.retry_after_ms;
    const err = new MqchatError(ack.error.code, ack.error.message, wait === void 0 ? {} : { retryAfterMs: wait });
    if (err.retryable) {
      if (wait !== void 0) this.outbox.markSent(ack.cmid, this.now() + wait - (this.opts.ackTimeoutMs ?? 5e3));
      return;
    }
    await this.outbox.remove(ack.cmid);
    this.pending.delete(ack.cmid);
    if (waiting) waiting.reject(err);
    else this.emit("error", err);
  }
  onUserEvent(ev) {
    this.emit("userEvent", ev);
    if (ev.type === "read") {
      const r = ev;
      this.takeRead(r.channel, r.seq, r.unread, r.mentions);
    } else if (ev.type === "server") {
      const s = ev;
      void this.refreshChannels().catch(() => void 0).then(() => this.emit("server", s));
    } else if (ev.type === "membership") {
      const m = ev;
      if (m.action === "added") {
        this.joinChannel(m.channel);
      } else {
        this.forget(m.channel);
      }
      this.emit("membership", m);
    }
  }
  // ---- sending --------------------------------------------------------------------------------
  /**
   * Send a text message. It goes into the outbox first and is republished with the same `cmid`
   * until acked, across reconnects. Resolves with the ack (`id`, `seq`); rejects with the ack's
   * error code when the server refuses it for good.
   */
  send(channel, body, opts = {}) {
    const payload = { kind: "text", body };
    if (opts.replyTo !== void 0) payload.reply_to = opts.replyTo;
    if (opts.thread !== void 0) payload.thread = opts.thread;
    return this.sendPayload(channel, payload, opts.cmid === void 0 ? {} : { cmid: opts.cmid });
  }
  /** Reply under thread root `root` (a message that is not itself a reply). */
  reply(channel, root, body, opts = {}) {
    return this.send(channel, body, { ...opts, thread: root });
  }
  /** Replace the body of your message `target` (its seq). */
  edit(channel, target, body, opts = {}) {
    return this.sendPayload(channel, { kind: "edit", target, body }, opts);
  }
  /** Delete message `target` (yours; anyone's with `manage_messages`): it becomes a tombstone. */
  deleteMessage(channel, target, opts = {}) {
    return this.sendPayload(channel, { kind: "delete", target }, opts);
  }
  /** React to message `target` with `emoji` (a Unicode emoji or a `:shortcode:`); again changes nothing. */
  react(channel, target, emoji, opts = {}) {
    return this.sendPayload(channel, { kind: "reaction", target, emoji, op: "add" }, opts);
  }
  /** Take your reaction `emoji` off message `target`. */
  unreact(channel, target, emoji, opts = {}) {
    return this.sendPayload(channel, { kind: "reaction", target, emoji, op: "remove" }, opts);
  }
  pin(channel, target, opts = {}) {
    return this.sendPayload(channel, { kind: "pin", target }, opts);
  }
  unpin(channel, target, opts = {}) {
    return this.sendPayload(channel, { kind: "unpin", target }, opts);
  }
  // ---- files (docs/attachments.md) --------------------------------------------------------------
  /**
   * Upload a file to a channel you are a member of: start the upload, PUT the bytes to the signed
   * URL, have the server verify them. Resolves with the completed (`ready`) upload, whose
   * `upload_id` {@link sendUpload} sends; an upload not sent within a day is deleted.
   *
   * @throws MqchatError `forbidden_type`, `upload_too_large`, `type_mismatch`, `rate_limited`, ...
   */
  async uploadFile(channel, data, file) {
    checkId("channel", channel);
    const started = await this.api.createUpload(channel, { ...file, size: byteLength(data) });
    await this.api.putUpload(started, data);
    return this.api.completeUpload(started.upload_id);
  }
  /**
   * Send a completed upload as a `file` message, with an optional caption. Like {@link send} it
   * goes through the outbox: republished with the same `cmid` until acked (a retry gets the same
   * attachment, never `upload_used`).
   */
  sendUpload(channel, uploadId, opts = {}) {
    const payload = { kind: "file", upload: uploadId };
    if (opts.caption !== void 0 && opts.caption !== "") payload.body = opts.caption;
    if (opts.replyTo !== void 0) payload.reply_to = opts.replyTo;
    if (opts.thread !== void 0) payload.thread = opts.thread;
    return this.sendPayload(channel, payload, opts.cmid === void 0 ? {} : { cmid: opts.cmid });
  }
  /**
   * Upload a file ({@link uploadFile}) and send it ({@link sendUpload}). Resolves with the ack;
   * the message arrives on the stream with its `attachment`. A failed upload rejects before
   * anything is sent (upload again); a send refused for good rejects with the ack's code.
   */
  async sendFile(channel, data, opts) {
    const caption = opts.caption;
    if (caption !== void 0 && [...caption].length > 4e3) {
      throw new MqchatError("body_too_long", "the caption is over 4,000 characters");
    }
    const upload = await this.uploadFile(channel, data, { filename: opts.filename, contentType: opts.contentType });
    const { filename: _f, contentType: _c, ...send } = opts;
    return this.sendUpload(channel, upload.upload_id, send);
  }
  /**
   * Fresh signed URLs of an attachment (`attachment.id`, an upload id), for members of its
   * channel, with `url` and `thumbnail_url` made absolute: fetch them without a token. Use it
   * once a message's `url_expires` has passed.
   */
  async downloadUrl(uploadId) {
    const att = await this.api.download(uploadId);
    return this.resolveAttachment(att);
  }
  /** `attachment` with its URLs made absolute (a path is relative to the API's base URL). */
  resolveAttachment(att) {
    const out = { ...att, url: this.api.resolveUrl(att.url) };
    if (att.thumbnail_url) out.thumbnail_url = this.api.resolveUrl(att.thumbnail_url);
    return out;
  }
  /**
   * Send any payload the protocol defines (`kind` and its fields; `cmid` is added). New message
   * kinds go through here as the server defines them.
   */
  async sendPayload(channel, payload, opts = {}) {
    checkId("channel", channel);
    if (!this.outbox || !this.session) throw new MqchatError("not_logged_in", "log in first");
    if (typeof payload.body === "string" && [...payload.body].length > 4e3) {
      throw new MqchatError("body_too_long", "the body is over 4,000 characters");
    }
    if ((payload.kind === "text" || payload.kind === "edit") && !(typeof payload.body === "string" && payload.body.trim())) {
      throw new MqchatError("empty_body", `a ${payload.kind} needs a body with some text`);
    }
    for (const name of ["target", "reply_to", "thread"]) {
      const v = payload[name];
      if (v !== void 0 && !(Number.isInteger(v) && v >= 1)) {
        throw new MqchatError("invalid_target", `${name} must be a seq (an integer >= 1), not ${String(v)}`);
      }
    }
    const cmid = opts.cmid ?? this.newCmid();
    const result = new Promise((resolve, reject) => this.pending.set(cmid, { resolve, reject }));
    await this.outbox.add({
      cmid,
      channel,
      payload: { cmid, ...payload },
      createdMs: this.now(),
      sentMs: 0,
      attempts: 0
    });
    if (this.stateValue === "connected") this.flushOutbox();
    return result;
  }
  /** Sends waiting for their ack. */
  pendingSends() {
    return (this.outbox?.all() ?? []).map(({ cmid, channel, payload, attempts }) => ({ cmid, channel, payload, attempts }));
  }
  newCmid() {
    this.cmidCounter += 1;
    const rand = Math.floor(this.random() * 2 ** 32).toString(36);
    return `${this.deviceId.slice(0, 24)}-${this.now().toString(36)}-${rand}-${this.cmidCounter}`;
  }
  flushOutbox() {
    const mq = this.mq;
    const session = this.session;
    if (!mq || !session || !this.outbox || this.stateValue !== "connected") return;
    const now = this.now();
    for (const e of this.outbox.due(now, this.opts.ackTimeoutMs ?? 5e3)) {
      this.outbox.markSent(e.cmid, now);
      mq.publish(topics.send(session.user_id, this.deviceId, e.channel), JSON.stringify(e.payload), { qos: 1 });
    }
  }
  // ---- read markers, typing, presence ----------------------------------------------------------
  /** Move this user's read marker in `channel` to `seq` (default: the newest message held). */
  async markRead(channel, seq) {
    const cursor = this.tracker.cursor(channel);
    const upTo = seq ?? cursor?.lastSeq ?? 0;
    const state = await this.api.markRead(channel, upTo, cursor?.epoch);
    this.takeRead(channel, state.seq, state.unread, state.mentions);
    return { type: "read", ...state };
  }
  /**
   * Say the user is typing (call on every keystroke: refreshed at most every 3 s, at QoS 0) or has
   * stopped (`false`, sent once).
   */
  setTyping(channel, typing) {
    const mq = this.mq;
    const me = this.userId;
    if (!mq || !me || this.stateValue !== "connected") return;
    const last = this.typingSent.get(channel);
    const now = this.now();
    if (typing) {
      if (last !== void 0 && now - last < TYPING_REFRESH_MS) return;
      this.typingSent.set(channel, now);
    } else {
      if (last === void 0) return;
      this.typingSent.delete(channel);
    }
    mq.publish(topics.typing(channel, me), JSON.stringify({ typing }), { qos: 0 });
  }
  /** Receive `typing` events for a channel (the one on screen). */
  watchTyping(channel) {
    checkId("channel", channel);
    if (this.watchedTyping.has(channel)) return;
    this.watchedTyping.add(channel);
    this.mq?.subscribe(topics.typingFilter(channel), { qos: 0 });
  }
  unwatchTyping(channel) {
    if (this.watchedTyping.delete(channel)) this.mq?.unsubscribe(topics.typingFilter(channel));
  }
  /** Receive `presence` events for these users (the retained state arrives at once). */
  watchPresence(users) {
    const fresh = users.filter((u) => !this.watchedPresence.has(checkId("user", u)));
    for (const u of fresh) this.watchedPresence.add(u);
    if (fresh.length) this.mq?.subscribe(fresh.map(topics.userPresence), { qos: 1 });
  }
  unwatchPresence(users) {
    const gone = users.filter((u) => this.watchedPresence.delete(u));
    if (gone.length) this.mq?.unsubscribe(gone.map(topics.userPresence));
  }
  /**
   * Publish this device's status (retained, with the connection's `conn`), e.g. `away` when the
   * app goes to the background. The status is kept: heartbeats repeat it, and the next connection
   * announces it after CONNACK.
   */
  async setStatus(status) {
    if (status !== "online" && status !== "away") {
      throw new TypeError(`status ${JSON.stringify(status)}: expected "online" or "away"`);
    }
    this.presenceStatus = status;
    const mq = this.mq;
    const conn = this.conn;
    if (!mq || !conn || !this.session) throw new MqchatError("not_connected", "connect first");
    await this.publishAsync(
      mq,
      topics.devicePresence(this.session.user_id, this.deviceId),
      presencePayload(status, conn, this.now()),
      { qos: 1, retain: true }
    );
  }
  /** The status this device publishes (`online` until {@link setStatus} says otherwise). */
  get status() {
    return this.presenceStatus;
  }
  /** Publish the current status on `mq` with connection id `conn` (fire and forget: a loss is the will's). */
  publishPresence(mq, conn) {
    const session = this.session;
    if (!session || !mq.connected) return;
    mq.publish(
      topics.devicePresence(session.user_id, this.deviceId),
      presencePayload(this.presenceStatus, conn, this.now()),
      { qos: 1, retain: true },
      () => void 0
    );
  }
  /** Heartbeats while `mq` is connected, if the login asked for them (docs/protocol.md, "Presence"). */
  startHeartbeat(mq, conn) {
    this.stopHeartbeat();
    const every = heartbeatInterval(this.session?.mqtt.presence_refresh_ms);
    if (every === null) return;
    this.heartbeatOf = mq;
    this.heartbeatTimer = setInterval(() => {
      if (this.mq !== mq || !mq.connected) {
        this.stopHeartbeat();
        return;
      }
      this.publishPresence(mq, conn);
    }, every);
  }
  stopHeartbeat() {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    this.heartbeatOf = null;
  }
  // ---- HTTP conveniences ----------------------------------------------------------------------
  history(channel, q = {}) {
    return this.api.history(channel, q);
  }
  inbox() {
    return this.api.inbox();
  }
  // ---- folded messages --------------------------------------------------------------------------
  /**
   * The messages of `channel` the client holds (the latest page since connect, everything after
   * it, and older pages from {@link loadOlder}), each with its state folded from the events held
   * exactly as the server folds it. Events that change messages are not listed.
   */
  view(channel) {
    return this.folds.get(channel)?.view(this.userId) ?? [];
  }
  /** The folded state of message `seq` of `channel`, if held. */
  messageState(channel, seq) {
    const s = this.folds.get(channel)?.state(seq);
    return s ? stateOut(s, this.userId) : void 0;
  }
  /**
   * Fetch the page before the oldest message held and fold it in (infinite scroll). Returns the
   * page's messages with their states and whether older ones exist.
   */
  async loadOlder(channel, limit = 50) {
    const f = this.foldOf(channel);
    const first = f.firstSeq;
    if (first === 1) return { messages: [], hasMore: false };
    const page = await this.api.history(channel, first ? { before: first, limit } : { limit });
    if (first && page.epoch === f.epoch && f.prepend(page.messages)) {
      const seqs = new Set(page.messages.map((m) => m.seq));
      return { messages: f.view(this.userId).filter((v) => seqs.has(v.message.seq)), hasMore: page.has_more };
    }
    return {
      messages: page.messages.filter((m) => !TARGETED_KINDS.has(m.kind) && m.state).map((m) => ({ message: m, state: m.state })),
      hasMore: page.has_more
    };
  }
  /** A thread: its root (with `reply_count`) and replies above `after`, in seq order. */
  thread(channel, root, q = {}) {
    return this.api.thread(channel, root, q);
  }
  /** The channel's pinned messages. */
  pins(channel) {
    return this.api.pins(channel);
  }
  /**
   * Search the messages of the channels you can see, newest first; pass `next_cursor` back as
   * `cursor` (same query and filters) for the next page.
   */
  search(query2, opts = {}) {
    return this.api.search(query2, opts);
  }
  /**
   * Take the channel list from the server again: subscribe to channels the client does not hold
   * (joined a server, or an invite accepted elsewhere), drop those it lost. Done on `server` events.
   */
  async refreshChannels() {
    const inbox = await this.api.inbox();
    const now = new Set(inbox.channels.map((c) => c.channel_id));
    this.takeUnread(inbox);
    for (const c of now) if (!this.tracker.cursor(c)) this.joinChannel(c);
    for (const c of this.tracker.channels()) if (!now.has(c)) this.forget(c);
    for (const c of now) this.emitUnread(c);
    return inbox;
  }
  /**
   * Create a group channel, or a direct one with exactly one other user, by user ids. Every
   * member's devices subscribe on the `membership` event.
   */
  async createChannel(kind, members, name) {
    const created = await this.api.createChannel(kind, members, name);
    return created.channel_id;
  }
  /** One page of a channel's members by user id (`limit` 1–500, default 100). */
  channelMembers(channelId, q = {}) {
    return this.api.channelMembers(channelId, q);
  }
  /** Every member of a channel, all pages (channel objects embed only the first 20). */
  allChannelMembers(channelId) {
    return this.api.allChannelMembers(channelId);
  }
  publishAsync(mq, topic, payload, opts) {
    return new Promise((resolve, reject) => mq.publish(topic, payload, opts, (err) => err ? reject(err) : resolve()));
  }
};
export {
  CONNACK,
  CREDENTIALS,
  ChannelFold,
  ChannelTracker,
  DEFAULT_BACKOFF,
  ERROR_CODES,
  HttpApi,
  MAX_REACTION_EMOJI,
  MemoryStorage,
  MqchatClient,
  MqchatError,
  Outbox,
  RETRYABLE,
  TARGETED_KINDS,
  TERMINAL,
  applyEvent,
  backoffBound,
  backoffDelay,
  byteLength,
  checkId,
  classify,
  classifyIncoming,
  connId,
  decide,
  dueEntries,
  errorInfo,
  fold,
  heartbeatInterval,
  parseTopic,
  presencePayload,
  refreshDelay,
  stateOut,
  tokenExpired,
  topics,
  willPayload
};
