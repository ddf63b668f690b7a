/**
 * The mqchat client: one object per signed-in device.
 *
 *   login (HTTP) ─▶ connect (MQTT over WebSocket, client id `{user}:{device}`)
 *        ─▶ GET /v1/me/inbox ─▶ subscribe (ack, user events, every channel) ─▶ POST /v1/sync
 *        ─▶ resend the outbox ─▶ "connected"
 *   live: ch/{c} ─▶ ChannelTracker (append / duplicate / gap ─▶ sync / new epoch ─▶ reset)
 *   lost: reconnect.decide (stop / re-login / retry after full-jitter backoff) ─▶ connect again
 *   delivered events ─▶ ChannelFold per channel (edits, deletes, reactions, pins, replies) ─▶ "update"
 *   token: refreshed over HTTP before expiry (rotation), handed to the broker on auth/{me}/{device}
 *   presence: a fresh `conn` per CONNECT in the will, `online` after CONNACK, heartbeats every
 *        `mqtt.presence_refresh_ms` (presence.ts), `offline` before a clean DISCONNECT
 *
 * The policy lives in pure modules (reconnect.ts, backoff.ts, outbox.ts `dueEntries`,
 * sequence.ts `classifyIncoming`); this class is the I/O around them. It mirrors docs/sync.md.
 */

import mqtt from "mqtt";

import { type BackoffPolicy, DEFAULT_BACKOFF } from "./backoff.js";
import { Emitter } from "./emitter.js";
import { MqchatError } from "./errors.js";
import { ChannelFold, type MessageView, stateOut } from "./fold.js";
import { type Fetch, type FileData, type HistoryQuery, HttpApi, byteLength, type PageQuery, type SearchOptions } from "./http.js";
import { Outbox } from "./outbox.js";
import { connId, heartbeatInterval, presencePayload, willPayload } from "./presence.js";
import { type Failure, classify, decide, tokenExpired } from "./reconnect.js";
import { ChannelTracker } from "./sequence.js";
import { type KeyValueStorage, MemoryStorage } from "./storage.js";
import { checkId, parseTopic, topics } from "./topics.js";
import {
  type Ack, type AckOk, type Attachment, type ChannelMembersPage, type HistoryPage, type Inbox, type LoggedOut, type LoginResult,
  type MembershipEvent,
  type Message, type MessageStateOut, type Pins, type PresenceStatus, type ReadEvent, type SearchPage,
  type ServerEvent, type SyncChannel, TARGETED_KINDS, type ThreadPage, type TypingEvent, type UserCreated,
  type Upload, type UserEvent, type UserPresence,
} from "./types.js";

export type ConnectionState =
  /** Not started, or closed by {@link MqchatClient.disconnect}. */
  | "idle"
  | "connecting"
  /** Connected, subscribed and synced: live. */
  | "connected"
  /** Waiting `delayMs` before the next attempt. */
  | "reconnecting"
  /** Gave up (a terminal failure, or a refused re-login): `reason` says why. */
  | "stopped";

export interface StateEvent {
  state: ConnectionState;
  failure?: Failure;
  delayMs?: number;
  reason?: string;
}

export interface UnreadEvent {
  channel: string;
  unread: number;
  mentions: number;
  /** Unread messages over all channels the client knows. */
  badge: number;
}

export interface ResetEvent {
  channel: string;
  /** `new`: a channel the client did not hold; `reset`: its history was rebuilt. */
  status: "new" | "reset";
  epoch: number;
  /** The latest page, which replaces whatever was shown for the channel. */
  messages: Message[];
}

/** A message held by the client changed: an edit, delete, reaction, pin or a reply under it. */
export interface UpdateEvent {
  channel: string;
  seq: number;
  /** The message as it was sent (its original body). */
  message: Message;
  /** Its folded state now (as history would show it to you). */
  state: MessageStateOut;
  /** The event that changed it (its seq is the newest the fold holds). */
  cause: Message;
}

/** Options of a text send. */
export interface SendOptions {
  /** Default: a fresh one. Reuse it to retry a send the app kept itself. */
  cmid?: string;
  /** The seq of a message this one quotes. */
  replyTo?: number;
  /** The seq of the thread root this one replies under (threads are one level deep). */
  thread?: number;
}

/** What {@link MqchatClient.uploadFile} needs besides the bytes. */
export interface FileOptions {
  /** The file's name (the server keeps its last path segment, cleaned). */
  filename: string;
  /** One of the server's `objects.allowed_types`; the bytes must really be of this type. */
  contentType: string;
}

/** Options of {@link MqchatClient.sendFile} and {@link MqchatClient.sendUpload}. */
export interface FileSendOptions extends SendOptions {
  /** At most 4,000 characters. */
  caption?: string;
}

export interface ClientEvents {
  state: StateEvent;
  /** A channel message, in seq order per channel, once each. */
  message: Message;
  reset: ResetEvent;
  ack: Ack;
  presence: UserPresence;
  typing: TypingEvent;
  unread: UnreadEvent;
  membership: MembershipEvent;
  /** A message held changed state (see {@link MqchatClient.view}). */
  update: UpdateEvent;
  /** The user joined, left or was removed from a server (the channel list is refreshed first). */
  server: ServerEvent;
  /** The session changed (a refresh rotated the tokens): persist it if you keep sessions. */
  session: LoginResult;
  /** Every event on `user/{me}/events`, including types this SDK does not know yet. */
  userEvent: UserEvent;
  /** Errors nobody awaits (a failed background sync, a dropped send). */
  error: MqchatError;
}

export interface ClientOptions {
  /** The HTTP API's address, e.g. `http://127.0.0.1:8080`; `""` is the page's own origin. */
  apiUrl: string;
  /** Stable per installation; 1-64 of `[A-Za-z0-9_-]`. */
  deviceId: string;
  /** Where the outbox is kept (default: memory). `localStorage` and React Native's `AsyncStorage` fit. */
  storage?: KeyValueStorage;
  backoff?: Partial<BackoffPolicy>;
  /** Republish an unacked send after this long (default 5 s). */
  ackTimeoutMs?: number;
  /** MQTT keep-alive (default 30 s). */
  keepaliveS?: number;
  /** No CONNACK within this long counts as a timeout (default 10 s). */
  connectTimeoutMs?: number;
  /** Overrides the login answer's `mqtt.ws_url` (e.g. behind a proxy). */
  mqttUrl?: string;
  /** Messages per channel per sync call (default 200). */
  syncLimit?: number;
  /**
   * Gets a fresh token when the broker refuses an expired one. Default: log in again with the
   * password given to {@link MqchatClient.login} (kept in memory only), if any.
   */
  relogin?: () => Promise<LoginResult>;
  /**
   * Refresh the access token over HTTP before it expires (rotating the refresh token) and hand it
   * to the live connection in-band (default true; needs a `refresh_token` in the session).
   */
  autoRefresh?: boolean;
  fetch?: Fetch;
  /** Uniform in [0, 1): the jitter's source (tests pass their own). */
  random?: () => number;
  now?: () => number;
}

/** How often the outbox is checked for sends whose ack is overdue. */
const OUTBOX_TICK_MS = 1000;
/** A typing indicator is refreshed this often while the user types (the broker allows ~1 per 2 s). */
const TYPING_REFRESH_MS = 3000;
/** A received indicator expires this long after the last one. */
const TYPING_EXPIRY_MS = 6000;
/** A SUBSCRIBE to a channel just joined is retried this many times, this much later each time. */
const SUBSCRIBE_RETRIES = 5;
const SUBSCRIBE_RETRY_MS = 400;
/** Refresh the access token this long before it expires (or at 80 % of its life, if later). */
const REFRESH_LEAD_MS = 5 * 60_000;
/** After a refresh failed on the network, try again this long later (at most). */
const REFRESH_RETRY_MS = 30_000;

/** When to refresh a token that has `remainingMs` to live: 5 minutes early, or at 80 % of its life if later. */
export function refreshDelay(remainingMs: number): number {
  return Math.max(0, Math.max(remainingMs - REFRESH_LEAD_MS, remainingMs * 0.8));
}

interface Pending {
  resolve: (ack: AckOk) => void;
  reject: (err: MqchatError) => void;
}

/**
 * Unread counting by `count_seq` (docs/protocol.md, *Unread counts*): only texts and files count, so
 * unread = the channel's last count_seq − the count_seq at the read marker.
 */
interface UnreadState {
  lastCount: number;
  readCount: number;
  readSeq: number;
  mentions: number;
}

/** UTF-8 bytes to a string; React Native engines without `TextDecoder` get a plain fallback. */
function utf8(bytes: Uint8Array): string {
  if (typeof TextDecoder !== "undefined") return new TextDecoder().decode(bytes);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return decodeURIComponent(escape(binary));
}

export class MqchatClient extends Emitter<ClientEvents> {
  /** The HTTP API; `api.request()` reaches endpoints this class has no method for yet. */
  readonly api: HttpApi;
  readonly deviceId: string;

  private session: LoginResult | null = null;
  private password: { username: string; password: string } | null = null;
  private readonly storage: KeyValueStorage;
  private readonly backoff: BackoffPolicy;
  private readonly opts: ClientOptions;
  private readonly random: () => number;
  private readonly now: () => number;
  private outbox: Outbox | null = null;
  private readonly tracker = new ChannelTracker();
  private readonly pending = new Map<string, Pending>();
  private readonly unreadState = new Map<string, UnreadState>();
  private readonly folds = new Map<string, ChannelFold>();
  private refreshTimer: ReturnType<typeof setTimeout> | null = null;
  private refreshing: Promise<LoginResult> | null = null;
  private readonly watchedPresence = new Set<string>();
  private readonly watchedTyping = new Set<string>();
  private readonly typingSent = new Map<string, number>();
  private readonly typingTimers = new Map<string, ReturnType<typeof setTimeout>>();
  private mq: mqtt.MqttClient | null = null;
  /** The connection id of the current connection (in its will and every presence publish). */
  private conn: string | null = null;
  /** This device's status: published after CONNACK, by setStatus, and by every heartbeat. */
  private presenceStatus: Exclude<PresenceStatus, "offline"> = "online";
  private heartbeatTimer: ReturnType<typeof setInterval> | null = null;
  /** The connection the heartbeat runs for. */
  private heartbeatOf: mqtt.MqttClient | null = null;
  private stateValue: ConnectionState = "idle";
  private attempt = 0;
  private relogged = false;
  private wanted = false;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private readonly retryTimers = new Set<ReturnType<typeof setTimeout>>();
  private outboxTimer: ReturnType<typeof setInterval> | null = null;
  private cmidCounter = 0;
  private firstConnect: { resolve: () => void; reject: (e: MqchatError) => void; promise: Promise<void> } | null = null;

  constructor(options: ClientOptions) {
    super();
    this.opts = options;
    this.deviceId = checkId("deviceId", options.deviceId);
    this.api = new HttpApi(options.apiUrl.replace(/\/+$/, ""), options.fetch);
    // An HTTP call refused for an expired token refreshes it (if the session can) and is made again.
    this.api.renewToken = async () => {
      if (!this.session?.refresh_token) throw new MqchatError("token_expired", "the token has expired");
      await this.refresh();
    };
    this.storage = options.storage ?? new MemoryStorage();
    this.backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.random = options.random ?? Math.random;
    this.now = options.now ?? Date.now;
  }

  get state(): ConnectionState {
    return this.stateValue;
  }

  /** The signed-in user's id (null before login). */
  get userId(): string | null {
    return this.session?.user_id ?? null;
  }

  // ---- accounts -------------------------------------------------------------------------------

  signup(username: string, password: string): Promise<UserCreated> {
    return this.api.signup(username, password);
  }

  /** Log this device in; the password stays in memory for re-login when the token expires. */
  async login(username: string, password: string): Promise<LoginResult> {
    const result = await this.api.login(username, password, this.deviceId);
    this.password = { username, password };
    await this.useSession(result);
    return result;
  }

  /** Use a login answer obtained elsewhere (e.g. kept from an earlier run, or your own identity provider). */
  async useSession(result: LoginResult): Promise<void> {
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
  get currentSession(): LoginResult | null {
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
  refresh(): Promise<LoginResult> {
    this.refreshing ??= this.doRefresh().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  private async doRefresh(): Promise<LoginResult> {
    const s = this.session;
    if (!s) throw new MqchatError("not_logged_in", "log in first");
    if (!s.refresh_token) throw new MqchatError("refresh_invalid", "this session has no refresh token: log in again");
    const pair = await this.api.refresh(s.refresh_token);
    const next: LoginResult = { ...s, token: pair.token, refresh_token: pair.refresh_token, expires_at: pair.expires_at };
    await this.useSession(next);
    const mq = this.mq;
    if (mq?.connected) {
      // The broker moves this connection's expiry to the new token's (docs/protocol.md, "Token refresh").
      await this.publishAsync(mq, topics.auth(s.user_id, this.deviceId), pair.token, { qos: 1 })
        .catch(() => undefined); // lost with the connection: the next CONNECT uses the new token anyway
    }
    return next;
  }

  private scheduleRefresh(delayMs?: number): void {
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    const s = this.session;
    if (!s?.refresh_token || this.opts.autoRefresh === false) return;
    const delay = delayMs ?? refreshDelay(s.expires_at * 1000 - this.now());
    const timer = setTimeout(() => {
      this.refreshTimer = null;
      this.refresh().catch((err: unknown) => {
        const e = err instanceof MqchatError ? err : new MqchatError("network", String(err));
        if (e.retryable) {
          const left = (this.session?.expires_at ?? 0) * 1000 - this.now();
          this.scheduleRefresh(Math.max(e.retryAfterMs ?? 1000, Math.min(REFRESH_RETRY_MS, left / 4)));
        }
        this.emit("error", e);
      });
    }, Math.min(delay, 2 ** 31 - 1));
    (timer as { unref?: () => void }).unref?.(); // never keeps a Node process alive on its own
    this.refreshTimer = timer;
  }

  /**
   * Log this device out: disconnect cleanly, then end its login on the server (its refresh tokens
   * stop working, its access tokens are refused, the broker closes its other connections).
   */
  async logout(): Promise<LoggedOut> {
    await this.disconnect();
    const out = await this.api.logout();
    this.endSession();
    return out;
  }

  /** Log every device of the user out (a lost phone): the others are disconnected within ~1 s. */
  async logoutAll(): Promise<LoggedOut> {
    await this.disconnect();
    const out = await this.api.logoutAll();
    this.endSession();
    return out;
  }

  private endSession(): void {
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
  connect(): Promise<void> {
    if (!this.session) return Promise.reject(new MqchatError("not_logged_in", "log in first"));
    if (this.stateValue === "connected") return Promise.resolve();
    if (this.firstConnect) return this.firstConnect.promise;
    let settle!: { resolve: () => void; reject: (e: MqchatError) => void };
    const done = new Promise<void>((resolve, reject) => {
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
  async disconnect(): Promise<void> {
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
        await this.publishAsync(mq, topics.devicePresence(this.session.user_id, this.deviceId),
          presencePayload("offline", conn, this.now()), { qos: 1, retain: true }).catch(() => undefined);
      }
      await mq.endAsync().catch(() => undefined);
    }
    this.setState({ state: "idle" });
    this.firstConnect?.reject(new MqchatError("closed", "disconnect() was called"));
    this.firstConnect = null;
  }

  /**
   * Close the socket without DISCONNECT, as a lost network does (the broker publishes the last
   * will); the reconnect table then applies. For tests and demos.
   */
  dropConnection(): void {
    this.mq?.stream?.destroy();
  }

  private stopTimers(): void {
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

  private setState(ev: StateEvent): void {
    this.stateValue = ev.state;
    this.emit("state", ev);
  }

  private open(): void {
    const session = this.session;
    if (!session || !this.wanted) return;
    this.setState({ state: "connecting" });
    const me = session.user_id;
    const url = this.opts.mqttUrl ?? session.mqtt.ws_url;
    const startedMs = this.now();
    // A fresh connection id before each CONNECT: a late will of an older connection ends only that one.
    const conn = connId();
    this.conn = conn;
    const mq = mqtt.connect(url, {
      clientId: `${me}:${this.deviceId}`,
      username: me,
      password: session.token,
      protocolVersion: 4,
      clean: true,
      keepalive: this.opts.keepaliveS ?? 30,
      connectTimeout: this.opts.connectTimeoutMs ?? 10_000,
      reconnectPeriod: 0, // the decision table below decides, not MQTT.js
      resubscribe: false,
      will: {
        topic: topics.devicePresence(me, this.deviceId),
        payload: willPayload(conn),
        qos: 1,
        retain: true,
      },
    });
    this.mq = mq;
    let lastError: unknown = null;
    let connected = false;
    mq.on("error", (err) => {
      lastError = err;
    });
    mq.on("message", (topic, payload) => this.onMessage(topic, payload));
    mq.on("connect", () => {
      connected = true;
      // Right after CONNACK: the status (online unless setStatus("away") said otherwise), then heartbeats.
      this.publishPresence(mq, conn);
      this.startHeartbeat(mq, conn);
      void this.resume(mq);
    });
    mq.on("close", () => {
      if (this.heartbeatOf === mq) this.stopHeartbeat();
      if (this.mq !== mq) return;
      // MQTT.js may report the CONNACK refusal just after the close: look a tick later.
      setTimeout(() => {
        if (this.mq !== mq) return;
        this.mq = null;
        mq.removeAllListeners("message");
        mq.end(true);
        let failure: Failure = connected ? "connection_lost" : classify(lastError);
        if (!connected && lastError === null
            && this.now() - startedMs >= (this.opts.connectTimeoutMs ?? 10_000)) failure = "timeout";
        this.onLost(failure, session.token);
      }, 0);
    });
  }

  /** @param usedToken the token the lost connection presented (a refresh may have replaced it since). */
  private onLost(failure: Failure, usedToken?: string): void {
    if (!this.wanted || !this.session) return;
    if ((failure === "not_authorized" || failure === "bad_credentials") && usedToken !== undefined
        && usedToken !== this.session.token && !this.relogged) {
      // Refused with a token a refresh has replaced meanwhile: try the new one at once (once).
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
      backoff: this.backoff,
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

  private async reloginThenOpen(failure: Failure): Promise<void> {
    this.setState({ state: "reconnecting", failure, delayMs: 0, reason: "token expired: logging in again" });
    try {
      let fresh: LoginResult | null = null;
      if (this.opts.relogin) fresh = await this.opts.relogin();
      else if (this.session?.refresh_token) {
        try {
          fresh = await this.refresh();
        } catch (err) {
          // A refresh token that no longer works falls back to the password, if there is one.
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

  private stop(failure: Failure, reason: string): void {
    this.wanted = false;
    this.stopTimers();
    if (this.refreshTimer) clearTimeout(this.refreshTimer);
    this.refreshTimer = null;
    this.setState({ state: "stopped", failure, reason });
    this.firstConnect?.reject(new MqchatError(failure === "timeout" ? "network" : "connect_refused", reason));
    this.firstConnect = null;
  }

  /** Connected: subscribe first, then sync (docs/sync.md "On (re)connect"), then resend the outbox. */
  private async resume(mq: mqtt.MqttClient): Promise<void> {
    const session = this.session;
    if (!session) return;
    const me = session.user_id;
    try {
      const inbox = await this.api.inbox();
      const channels = inbox.channels.map((c) => c.channel_id);
      this.takeUnread(inbox);
      const filters = [
        topics.ack(me, this.deviceId), topics.userEvents(me), ...channels.map(topics.channel),
        ...[...this.watchedPresence].map(topics.userPresence), ...[...this.watchedTyping].map(topics.typingFilter),
      ];
      const subscriptions: Record<string, { qos: 0 | 1 }> = {};
      for (const topic of filters) subscriptions[topic] = { qos: topic.startsWith("typing/") ? 0 : 1 };
      const granted = await mq.subscribeAsync(subscriptions);
      if (this.mq !== mq) return;
      // A channel joined a moment ago may be refused until the broker's membership cache expires.
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
      // The API or a SUBSCRIBE failed: treat it like a failed connection, and let the table decide
      // (a refused token re-logs in if it expired, and stops otherwise).
      if (this.mq !== mq) return;
      this.mq = null;
      mq.removeAllListeners("message");
      mq.end(true);
      const refusedToken = err instanceof MqchatError && err.action === "relogin";
      this.onLost(refusedToken ? "not_authorized" : "connection_lost");
    }
  }

  /** Sync `channels` until every one is complete, folding answers into the tracker. */
  private async syncChannels(channels: string[]): Promise<void> {
    let want = channels;
    const touched = new Set(channels);
    for (const c of want) this.tracker.beginSync(c);
    let failed = false;
    try {
      while (want.length) {
        const known = this.tracker.syncCursors(want);
        const answer = await this.api.sync(known, this.opts.syncLimit ?? 200);
        const next: string[] = [];
        for (const ch of answer.channels) {
          // Unlisted channels come back as "new": take those the client does not hold yet.
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

  private applySync(ch: SyncChannel): boolean {
    const applied = this.tracker.applySync(ch);
    if (applied.replace) {
      this.foldOf(ch.channel).reset(applied.replace);
      const u = this.unreadState.get(ch.channel);
      const last = applied.replace.at(-1)?.count_seq;
      if (u && last !== undefined) u.lastCount = Math.max(u.lastCount, last);
      this.emit("reset", { channel: ch.channel, status: ch.status === "new" ? "new" : "reset", epoch: ch.epoch,
        messages: applied.replace });
    }
    for (const m of applied.deliver) this.deliver(m);
    return applied.more;
  }

  /**
   * Release held messages that now follow the cursor. A gap still open is filled again, unless
   * the fill just failed: then the next live message of the channel (or the next reconnect's
   * sync) tries again, so a server that is down is not hammered.
   */
  private finishSync(channel: string, refill: boolean): void {
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
  private async fillGap(channel: string): Promise<void> {
    try {
      const cursor = this.tracker.cursor(channel);
      if (cursor && !(await this.fillFromHistory(channel, cursor.epoch))) return;
      await this.syncChannels([channel]);
    } catch (err) {
      this.emit("error", err instanceof MqchatError ? err : new MqchatError("network", String(err)));
    }
  }

  /** Returns true when the epoch changed (the caller syncs the channel). */
  private async fillFromHistory(channel: string, epoch: number): Promise<boolean> {
    this.tracker.beginSync(channel);
    let done = false;
    try {
      for (;;) {
        const lastSeq = this.tracker.cursor(channel)?.lastSeq ?? 0;
        const page = await this.api.history(channel, { after: lastSeq, limit: 200 });
        if (page.epoch !== epoch) return true;
        const more = this.applySync({ channel, status: "ok", epoch, last_seq: page.last_seq,
          has_more: page.has_more, messages: page.messages });
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
  private joinChannel(channel: string, attempt = 0): void {
    const mq = this.mq;
    if (!mq) return; // the next connect's inbox lists the channel
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
      void this.fillGap(channel).then(() => this.refreshUnread()).catch(() => undefined);
    });
  }

  private forget(channel: string): void {
    this.tracker.drop(channel);
    this.unreadState.delete(channel);
    this.folds.delete(channel);
    this.mq?.unsubscribe(topics.channel(channel));
  }

  // ---- incoming -------------------------------------------------------------------------------

  private onMessage(topic: string, payload: Uint8Array): void {
    const parsed = parseTopic(topic);
    if (!parsed) return;
    let data: unknown;
    try {
      data = JSON.parse(utf8(payload));
    } catch {
      return; // not ours to judge: a malformed payload is ignored, never fatal.
    }
    if (typeof data !== "object" || data === null) return;
    switch (parsed.kind) {
      case "channel": {
        const offer = this.tracker.offer(data as Message);
        for (const m of offer.deliver) this.deliver(m);
        if (offer.needSync) void this.fillGap(parsed.channel);
        break;
      }
      case "ack":
        void this.onAck(data as Ack);
        break;
      case "userEvents":
        this.onUserEvent(data as UserEvent);
        break;
      case "userPresence": {
        const p = data as { status?: PresenceStatus; last_seen?: number };
        if (p.status) this.emit("presence", { user: parsed.user, status: p.status, last_seen: p.last_seen ?? 0 });
        break;
      }
      case "typing": {
        if (parsed.user === this.userId) break;
        const typing = (data as { typing?: unknown }).typing === true;
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

  private foldOf(channel: string): ChannelFold {
    let f = this.folds.get(channel);
    if (!f) this.folds.set(channel, (f = new ChannelFold()));
    return f;
  }

  private deliver(m: Message): void {
    const u = this.unreadState.get(m.channel) ?? { lastCount: 0, readCount: 0, readSeq: 0, mentions: 0 };
    this.unreadState.set(m.channel, u);
    const counts = !TARGETED_KINDS.has(m.kind);
    const count = m.count_seq ?? (counts ? u.lastCount + 1 : u.lastCount);
    u.lastCount = Math.max(u.lastCount, count);
    if (counts && m.sender === this.userId) {
      // Own texts move the read marker (the server does the same).
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
  private takeRead(channel: string, seq: number, unread: number, mentions: number): void {
    const u = this.unreadState.get(channel) ?? { lastCount: unread, readCount: 0, readSeq: 0, mentions: 0 };
    const atMarker = this.folds.get(channel)?.event(seq)?.count_seq;
    u.readSeq = Math.max(u.readSeq, seq);
    u.readCount = Math.max(u.readCount, atMarker ?? u.lastCount - unread);
    u.lastCount = Math.max(u.lastCount, u.readCount + unread);
    u.mentions = mentions;
    this.unreadState.set(channel, u);
    this.emitUnread(channel);
  }

  private emitUnread(channel: string): void {
    const u = this.unreadState.get(channel);
    if (!u) return;
    this.emit("unread", { channel, unread: Math.max(0, u.lastCount - u.readCount), mentions: u.mentions,
      badge: this.badge() });
  }

  private takeUnread(inbox: Inbox): void {
    for (const c of inbox.channels) {
      const u = this.unreadState.get(c.channel_id);
      const last = c.last_message?.count_seq ?? c.unread;
      // The inbox may be older than a message already delivered here: never move backwards.
      this.unreadState.set(c.channel_id, {
        lastCount: Math.max(last, u?.lastCount ?? 0), readCount: Math.max(last - c.unread, u?.readCount ?? 0),
        readSeq: Math.max(c.read_seq, u?.readSeq ?? 0), mentions: c.mentions,
      });
    }
  }

  /** Fetch unread and mention counts of every channel from the server (`unread` events follow). */
  async refreshUnread(): Promise<Inbox> {
    const inbox = await this.api.inbox();
    this.takeUnread(inbox);
    for (const c of inbox.channels) this.emitUnread(c.channel_id);
    return inbox;
  }

  /** Unread messages over all channels, as far as this client knows. */
  badge(): number {
    let total = 0;
    for (const u of this.unreadState.values()) total += Math.max(0, u.lastCount - u.readCount);
    return total;
  }

  /** The unread count of one channel, as far as this client knows. */
  unread(channel: string): number {
    const u = this.unreadState.get(channel);
    return u ? Math.max(0, u.lastCount - u.readCount) : 0;
  }

  private async onAck(ack: Ack): Promise<void> {
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
    const err = new MqchatError(ack.error.code, ack.error.message, wait === undefined ? {} : { retryAfterMs: wait });
    if (err.retryable) {
      // Stays in the outbox; republished with the same cmid when due (a wait: not before it is over).
      if (wait !== undefined) this.outbox.markSent(ack.cmid, this.now() + wait - (this.opts.ackTimeoutMs ?? 5000));
      return;
    }
    await this.outbox.remove(ack.cmid);
    this.pending.delete(ack.cmid);
    if (waiting) waiting.reject(err);
    else this.emit("error", err);
  }

  private onUserEvent(ev: UserEvent): void {
    this.emit("userEvent", ev);
    if (ev.type === "read") {
      const r = ev as ReadEvent;
      this.takeRead(r.channel, r.seq, r.unread, r.mentions);
    } else if (ev.type === "server") {
      // Joining a server adds its channels (no membership events): take the channel list again.
      const s = ev as ServerEvent;
      void this.refreshChannels().catch(() => undefined).then(() => this.emit("server", s));
    } else if (ev.type === "membership") {
      const m = ev as MembershipEvent;
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
  send(channel: string, body: string, opts: SendOptions = {}): Promise<AckOk> {
    const payload: { kind: string; body: string; reply_to?: number; thread?: number } = { kind: "text", body };
    if (opts.replyTo !== undefined) payload.reply_to = opts.replyTo;
    if (opts.thread !== undefined) payload.thread = opts.thread;
    return this.sendPayload(channel, payload, opts.cmid === undefined ? {} : { cmid: opts.cmid });
  }

  /** Reply under thread root `root` (a message that is not itself a reply). */
  reply(channel: string, root: number, body: string, opts: Omit<SendOptions, "thread"> = {}): Promise<AckOk> {
    return this.send(channel, body, { ...opts, thread: root });
  }

  /** Replace the body of your message `target` (its seq). */
  edit(channel: string, target: number, body: string, opts: { cmid?: string } = {}): Promise<AckOk> {
    return this.sendPayload(channel, { kind: "edit", target, body }, opts);
  }

  /** Delete message `target` (yours; anyone's with `manage_messages`): it becomes a tombstone. */
  deleteMessage(channel: string, target: number, opts: { cmid?: string } = {}): Promise<AckOk> {
    return this.sendPayload(channel, { kind: "delete", target }, opts);
  }

  /** React to message `target` with `emoji` (a Unicode emoji or a `:shortcode:`); again changes nothing. */
  react(channel: string, target: number, emoji: string, opts: { cmid?: string } = {}): Promise<AckOk> {
    return this.sendPayload(channel, { kind: "reaction", target, emoji, op: "add" }, opts);
  }

  /** Take your reaction `emoji` off message `target`. */
  unreact(channel: string, target: number, emoji: string, opts: { cmid?: string } = {}): Promise<AckOk> {
    return this.sendPayload(channel, { kind: "reaction", target, emoji, op: "remove" }, opts);
  }

  pin(channel: string, target: number, opts: { cmid?: string } = {}): Promise<AckOk> {
    return this.sendPayload(channel, { kind: "pin", target }, opts);
  }

  unpin(channel: string, target: number, opts: { cmid?: string } = {}): Promise<AckOk> {
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
  async uploadFile(channel: string, data: FileData, file: FileOptions): Promise<Upload> {
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
  sendUpload(channel: string, uploadId: string, opts: FileSendOptions = {}): Promise<AckOk> {
    const payload: { kind: string; upload: string; body?: string; reply_to?: number; thread?: number } =
      { kind: "file", upload: uploadId };
    if (opts.caption !== undefined && opts.caption !== "") payload.body = opts.caption;
    if (opts.replyTo !== undefined) payload.reply_to = opts.replyTo;
    if (opts.thread !== undefined) payload.thread = opts.thread;
    return this.sendPayload(channel, payload, opts.cmid === undefined ? {} : { cmid: opts.cmid });
  }

  /**
   * Upload a file ({@link uploadFile}) and send it ({@link sendUpload}). Resolves with the ack;
   * the message arrives on the stream with its `attachment`. A failed upload rejects before
   * anything is sent (upload again); a send refused for good rejects with the ack's code.
   */
  async sendFile(channel: string, data: FileData, opts: FileOptions & FileSendOptions): Promise<AckOk> {
    const caption = opts.caption;
    if (caption !== undefined && [...caption].length > 4000) {
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
  async downloadUrl(uploadId: string): Promise<Attachment> {
    const att = await this.api.download(uploadId);
    return this.resolveAttachment(att);
  }

  /** `attachment` with its URLs made absolute (a path is relative to the API's base URL). */
  resolveAttachment(att: Attachment): Attachment {
    const out: Attachment = { ...att, url: this.api.resolveUrl(att.url) };
    if (att.thumbnail_url) out.thumbnail_url = this.api.resolveUrl(att.thumbnail_url);
    return out;
  }

  /**
   * Send any payload the protocol defines (`kind` and its fields; `cmid` is added). New message
   * kinds go through here as the server defines them.
   */
  async sendPayload(channel: string, payload: { kind: string; [field: string]: unknown },
    opts: { cmid?: string } = {}): Promise<AckOk> {
    checkId("channel", channel);
    if (!this.outbox || !this.session) throw new MqchatError("not_logged_in", "log in first");
    if (typeof payload.body === "string" && [...payload.body].length > 4000) {
      throw new MqchatError("body_too_long", "the body is over 4,000 characters");
    }
    if ((payload.kind === "text" || payload.kind === "edit") && !(typeof payload.body === "string" && payload.body.trim())) {
      throw new MqchatError("empty_body", `a ${payload.kind} needs a body with some text`);
    }
    for (const name of ["target", "reply_to", "thread"]) {
      const v = payload[name];
      if (v !== undefined && !(Number.isInteger(v) && (v as number) >= 1)) {
        throw new MqchatError("invalid_target", `${name} must be a seq (an integer >= 1), not ${String(v)}`);
      }
    }
    const cmid = opts.cmid ?? this.newCmid();
    const result = new Promise<AckOk>((resolve, reject) => this.pending.set(cmid, { resolve, reject }));
    await this.outbox.add({ cmid, channel, payload: { cmid, ...payload }, createdMs: this.now(), sentMs: 0,
      attempts: 0 });
    if (this.stateValue === "connected") this.flushOutbox();
    return result;
  }

  /** Sends waiting for their ack. */
  pendingSends(): { cmid: string; channel: string; payload: Record<string, unknown>; attempts: number }[] {
    return (this.outbox?.all() ?? []).map(({ cmid, channel, payload, attempts }) => ({ cmid, channel, payload, attempts }));
  }

  private newCmid(): string {
    this.cmidCounter += 1;
    const rand = Math.floor(this.random() * 2 ** 32).toString(36);
    return `${this.deviceId.slice(0, 24)}-${this.now().toString(36)}-${rand}-${this.cmidCounter}`;
  }

  private flushOutbox(): void {
    const mq = this.mq;
    const session = this.session;
    if (!mq || !session || !this.outbox || this.stateValue !== "connected") return;
    const now = this.now();
    for (const e of this.outbox.due(now, this.opts.ackTimeoutMs ?? 5000)) {
      this.outbox.markSent(e.cmid, now);
      mq.publish(topics.send(session.user_id, this.deviceId, e.channel), JSON.stringify(e.payload), { qos: 1 });
    }
  }

  // ---- read markers, typing, presence ----------------------------------------------------------

  /** Move this user's read marker in `channel` to `seq` (default: the newest message held). */
  async markRead(channel: string, seq?: number): Promise<ReadEvent> {
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
  setTyping(channel: string, typing: boolean): void {
    const mq = this.mq;
    const me = this.userId;
    if (!mq || !me || this.stateValue !== "connected") return;
    const last = this.typingSent.get(channel);
    const now = this.now();
    if (typing) {
      if (last !== undefined && now - last < TYPING_REFRESH_MS) return;
      this.typingSent.set(channel, now);
    } else {
      if (last === undefined) return;
      this.typingSent.delete(channel);
    }
    mq.publish(topics.typing(channel, me), JSON.stringify({ typing }), { qos: 0 });
  }

  /** Receive `typing` events for a channel (the one on screen). */
  watchTyping(channel: string): void {
    checkId("channel", channel);
    if (this.watchedTyping.has(channel)) return;
    this.watchedTyping.add(channel);
    this.mq?.subscribe(topics.typingFilter(channel), { qos: 0 });
  }

  unwatchTyping(channel: string): void {
    if (this.watchedTyping.delete(channel)) this.mq?.unsubscribe(topics.typingFilter(channel));
  }

  /** Receive `presence` events for these users (the retained state arrives at once). */
  watchPresence(users: string[]): void {
    const fresh = users.filter((u) => !this.watchedPresence.has(checkId("user", u)));
    for (const u of fresh) this.watchedPresence.add(u);
    if (fresh.length) this.mq?.subscribe(fresh.map(topics.userPresence), { qos: 1 });
  }

  unwatchPresence(users: string[]): void {
    const gone = users.filter((u) => this.watchedPresence.delete(u));
    if (gone.length) this.mq?.unsubscribe(gone.map(topics.userPresence));
  }

  /**
   * Publish this device's status (retained, with the connection's `conn`), e.g. `away` when the
   * app goes to the background. The status is kept: heartbeats repeat it, and the next connection
   * announces it after CONNACK.
   */
  async setStatus(status: Exclude<PresenceStatus, "offline">): Promise<void> {
    if (status !== "online" && status !== "away") {
      throw new TypeError(`status ${JSON.stringify(status)}: expected "online" or "away"`);
    }
    this.presenceStatus = status;
    const mq = this.mq;
    const conn = this.conn;
    if (!mq || !conn || !this.session) throw new MqchatError("not_connected", "connect first");
    await this.publishAsync(mq, topics.devicePresence(this.session.user_id, this.deviceId),
      presencePayload(status, conn, this.now()), { qos: 1, retain: true });
  }

  /** The status this device publishes (`online` until {@link setStatus} says otherwise). */
  get status(): Exclude<PresenceStatus, "offline"> {
    return this.presenceStatus;
  }

  /** Publish the current status on `mq` with connection id `conn` (fire and forget: a loss is the will's). */
  private publishPresence(mq: mqtt.MqttClient, conn: string): void {
    const session = this.session;
    if (!session || !mq.connected) return;
    mq.publish(topics.devicePresence(session.user_id, this.deviceId),
      presencePayload(this.presenceStatus, conn, this.now()), { qos: 1, retain: true }, () => undefined);
  }

  /** Heartbeats while `mq` is connected, if the login asked for them (docs/protocol.md, "Presence"). */
  private startHeartbeat(mq: mqtt.MqttClient, conn: string): void {
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

  private stopHeartbeat(): void {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    this.heartbeatOf = null;
  }

  // ---- HTTP conveniences ----------------------------------------------------------------------

  history(channel: string, q: HistoryQuery = {}): Promise<HistoryPage> {
    return this.api.history(channel, q);
  }

  inbox(): Promise<Inbox> {
    return this.api.inbox();
  }

  // ---- folded messages --------------------------------------------------------------------------

  /**
   * The messages of `channel` the client holds (the latest page since connect, everything after
   * it, and older pages from {@link loadOlder}), each with its state folded from the events held
   * exactly as the server folds it. Events that change messages are not listed.
   */
  view(channel: string): MessageView[] {
    return this.folds.get(channel)?.view(this.userId) ?? [];
  }

  /** The folded state of message `seq` of `channel`, if held. */
  messageState(channel: string, seq: number): MessageStateOut | undefined {
    const s = this.folds.get(channel)?.state(seq);
    return s ? stateOut(s, this.userId) : undefined;
  }

  /**
   * Fetch the page before the oldest message held and fold it in (infinite scroll). Returns the
   * page's messages with their states and whether older ones exist.
   */
  async loadOlder(channel: string, limit = 50): Promise<{ messages: MessageView[]; hasMore: boolean }> {
    const f = this.foldOf(channel);
    const first = f.firstSeq;
    if (first === 1) return { messages: [], hasMore: false };
    const page = await this.api.history(channel, first ? { before: first, limit } : { limit });
    if (first && page.epoch === f.epoch && f.prepend(page.messages)) {
      const seqs = new Set(page.messages.map((m) => m.seq));
      return { messages: f.view(this.userId).filter((v) => seqs.has(v.message.seq)), hasMore: page.has_more };
    }
    // Another epoch (a reset is on its way) or nothing held yet: the server's own states.
    return {
      messages: page.messages.filter((m) => !TARGETED_KINDS.has(m.kind) && m.state)
        .map((m) => ({ message: m, state: m.state as MessageStateOut })),
      hasMore: page.has_more,
    };
  }

  /** A thread: its root (with `reply_count`) and replies above `after`, in seq order. */
  thread(channel: string, root: number, q: { after?: number; limit?: number } = {}): Promise<ThreadPage> {
    return this.api.thread(channel, root, q);
  }

  /** The channel's pinned messages. */
  pins(channel: string): Promise<Pins> {
    return this.api.pins(channel);
  }

  /**
   * Search the messages of the channels you can see, newest first; pass `next_cursor` back as
   * `cursor` (same query and filters) for the next page.
   */
  search(query: string, opts: SearchOptions = {}): Promise<SearchPage> {
    return this.api.search(query, opts);
  }

  /**
   * Take the channel list from the server again: subscribe to channels the client does not hold
   * (joined a server, or an invite accepted elsewhere), drop those it lost. Done on `server` events.
   */
  async refreshChannels(): Promise<Inbox> {
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
  async createChannel(kind: "group" | "direct", members: string[], name?: string): Promise<string> {
    const created = await this.api.createChannel(kind, members, name);
    return created.channel_id;
  }

  /** One page of a channel's members by user id (`limit` 1–500, default 100). */
  channelMembers(channelId: string, q: PageQuery = {}): Promise<ChannelMembersPage> {
    return this.api.channelMembers(channelId, q);
  }

  /** Every member of a channel, all pages (channel objects embed only the first 20). */
  allChannelMembers(channelId: string): Promise<string[]> {
    return this.api.allChannelMembers(channelId);
  }

  private publishAsync(mq: mqtt.MqttClient, topic: string, payload: string,
    opts: { qos: 0 | 1; retain?: boolean }): Promise<void> {
    return new Promise((resolve, reject) => mq.publish(topic, payload, opts, (err) => (err ? reject(err) : resolve())));
  }
}
