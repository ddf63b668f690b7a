/**
 * The HTTP API (docs/http.md) over `fetch`. Errors become {@link MqchatError} with the server's
 * code; a network failure is code `network` (retryable).
 */

import { MqchatError } from "./errors.js";
import type {
  CreatedChannel, Channel, HistoryPage, Inbox, LoginResult, ReadState, SyncCursor, SyncResult, UserCreated,
} from "./types.js";

export type Fetch = typeof fetch;

export interface HistoryQuery {
  /** The newest `limit` messages below this seq. */
  before?: number;
  /** The oldest `limit` messages above this seq. */
  after?: number;
  /** 1-200, default 50. */
  limit?: number;
}

export class HttpApi {
  /** The bearer token sent with every request but signup and login. */
  token: string | null = null;

  /**
   * @param baseUrl the API's address, e.g. `http://127.0.0.1:8080` (`""`: the page's own origin).
   * @param fetchImpl an injectable `fetch` (default: the global one).
   */
  constructor(readonly baseUrl: string, private readonly fetchImpl: Fetch = (...a) => globalThis.fetch(...a)) {}

  /**
   * Any endpoint, for those this class has no method for yet (new endpoints land here first).
   *
   * @throws MqchatError with the server's error code, or `network`.
   */
  async request<T>(method: string, path: string, body?: unknown, opts: { auth?: boolean } = {}): Promise<T> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (opts.auth !== false) {
      if (!this.token) throw new MqchatError("not_logged_in", "log in first");
      headers.authorization = `Bearer ${this.token}`;
    }
    let res: Response;
    try {
      const init: RequestInit = { method, headers };
      if (body !== undefined) init.body = JSON.stringify(body);
      res = await this.fetchImpl(`${this.baseUrl}${path}`, init);
    } catch (err) {
      throw new MqchatError("network", `${method} ${path}: ${String(err)}`);
    }
    if (res.status === 204) return undefined as T;
    const text = await res.text();
    let data: unknown = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      // not JSON (a proxy's error page): reported below by status.
    }
    if (!res.ok) {
      const error = (data as { error?: { code?: string; message?: string } } | null)?.error;
      const retryAfter = Number(res.headers.get("retry-after"));
      const opts2: { status: number; retryAfterMs?: number } = { status: res.status };
      if (retryAfter > 0) opts2.retryAfterMs = retryAfter * 1000;
      throw new MqchatError(error?.code ?? (res.status >= 500 ? "unavailable" : "invalid_request"),
        error?.message ?? `${method} ${path}: HTTP ${res.status}`, opts2);
    }
    return data as T;
  }

  signup(username: string, password: string): Promise<UserCreated> {
    return this.request("POST", "/v1/users", { username, password }, { auth: false });
  }

  login(username: string, password: string, deviceId: string): Promise<LoginResult> {
    return this.request("POST", "/v1/login", { username, password, device_id: deviceId }, { auth: false });
  }

  /** A group channel (any members) or a direct one (exactly one other member; unique per pair). */
  createChannel(kind: "group" | "direct", members: string[], name?: string): Promise<CreatedChannel> {
    return this.request("POST", "/v1/channels", { kind, members, ...(name ? { name } : {}) });
  }

  addMember(channel: string, userId: string): Promise<{ channel_id: string; user_id: string; changed: boolean }> {
    return this.request("POST", `/v1/channels/${encodeURIComponent(channel)}/members`, { user_id: userId });
  }

  removeMember(channel: string, userId: string): Promise<{ channel_id: string; user_id: string; changed: boolean }> {
    return this.request("DELETE",
      `/v1/channels/${encodeURIComponent(channel)}/members/${encodeURIComponent(userId)}`);
  }

  async channels(): Promise<Channel[]> {
    return (await this.request<{ channels: Channel[] }>("GET", "/v1/me/channels")).channels;
  }

  history(channel: string, q: HistoryQuery = {}): Promise<HistoryPage> {
    const params = new URLSearchParams();
    if (q.before !== undefined) params.set("before", String(q.before));
    if (q.after !== undefined) params.set("after", String(q.after));
    if (q.limit !== undefined) params.set("limit", String(q.limit));
    const qs = params.toString();
    return this.request("GET", `/v1/channels/${encodeURIComponent(channel)}/messages${qs ? `?${qs}` : ""}`);
  }

  markRead(channel: string, seq: number, epoch?: number): Promise<ReadState> {
    return this.request("POST", `/v1/channels/${encodeURIComponent(channel)}/read`,
      epoch === undefined ? { seq } : { seq, epoch });
  }

  inbox(): Promise<Inbox> {
    return this.request("GET", "/v1/me/inbox");
  }

  sync(channels: SyncCursor[], limit?: number): Promise<SyncResult> {
    return this.request("POST", "/v1/sync", limit === undefined ? { channels } : { channels, limit });
  }

  async onlineCount(channel: string): Promise<number> {
    return (await this.request<{ online: number }>("GET",
      `/v1/channels/${encodeURIComponent(channel)}/presence`)).online;
  }
}
