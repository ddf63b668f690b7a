/**
 * The HTTP API (docs/http.md) over `fetch`. Errors become {@link MqchatError} with the server's
 * code; a network failure is code `network` (retryable).
 */

import { MqchatError } from "./errors.js";
import type {
  AckOk, Attachment, AuditPage, Ban, Channel, ChannelMembersPage, ChannelPage, CreatedChannel, HistoryPage, Inbox, Invite, InvitePreview, Joined,
  LoggedOut, LoginResult, MemberPage, MyPermissions, MyProfile, Overwrite, Pins, Profile, ReadState, Role,
  SearchPage, SendPayload, Server, ServerChannel, ServerList, ServerMember, SyncCursor, SyncResult, ThreadPage,
  TokenPair, Upload, UploadStarted, UserCreated,
} from "./types.js";

/** The bytes of a file to upload. */
export type FileData = Blob | ArrayBuffer | Uint8Array;

/** The byte length of `data`. */
export function byteLength(data: FileData): number {
  return "byteLength" in data ? data.byteLength : data.size;
}

export type Fetch = typeof fetch;

export interface HistoryQuery {
  /** The newest `limit` messages below this seq. */
  before?: number;
  /** The oldest `limit` messages above this seq. */
  after?: number;
  /** 1-200, default 50. */
  limit?: number;
}

/** Filters of `GET /v1/search` besides the query (docs/search.md). */
export interface SearchOptions {
  /** Only this channel (one you cannot see gives an empty result, not an error). */
  channel?: string;
  /** Only channels of this server. */
  server?: string;
  /** Only messages of this user. */
  from?: string;
  /** Only messages with `ts` below / above this (ms). */
  before?: number;
  after?: number;
  /** `"file"`: only messages with an attachment. */
  has?: "file";
  /** Hits per page, 1-100 (default 20). */
  limit?: number;
  /** `next_cursor` of the previous page (same query and filters). */
  cursor?: string;
}

/** A page of a listing paged by cursor. */
export interface PageQuery {
  limit?: number;
  cursor?: string;
}

const enc = encodeURIComponent;

function query(params: Record<string, string | number | boolean | undefined>): string {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined) qs.set(k, String(v));
  const text = qs.toString();
  return text ? `?${text}` : "";
}

export class HttpApi {
  /** The bearer token sent with every request but signup and login. */
  token: string | null = null;
  /**
   * Called once when a request is refused with `token_expired`; when it resolves (having set a
   * fresh {@link token}) the request is made again. The client sets it to its token refresh.
   */
  renewToken: (() => Promise<void>) | null = null;

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
    try {
      return await this.requestOnce<T>(method, path, body, opts);
    } catch (err) {
      if (!(err instanceof MqchatError) || err.code !== "token_expired" || opts.auth === false || !this.renewToken) {
        throw err;
      }
      await this.renewToken();
      return this.requestOnce<T>(method, path, body, opts);
    }
  }

  private async requestOnce<T>(method: string, path: string, body: unknown, opts: { auth?: boolean }): Promise<T> {
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

  /** Exchange a refresh token for a new pair; the one presented is spent (a second use ends the login). */
  refresh(refreshToken: string): Promise<TokenPair> {
    return this.request("POST", "/v1/token/refresh", { refresh_token: refreshToken }, { auth: false });
  }

  /** End this device's login: its refresh tokens stop working, its access tokens are refused. */
  logout(): Promise<LoggedOut> {
    return this.request("POST", "/v1/logout");
  }

  /** End the login of every device of the user (a lost phone). */
  logoutAll(): Promise<LoggedOut> {
    return this.request("POST", "/v1/logout/all");
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

  /**
   * One page of a channel's members by user id: `limit` 1–500 (default 100), `cursor` the
   * `next_cursor` of the previous page or a channel object's `members_next_cursor`. A page of a
   * server channel may be short, even empty, while `next_cursor` is set: keep going until it is null.
   */
  channelMembers(channel: string, q: PageQuery = {}): Promise<ChannelMembersPage> {
    return this.request("GET", `/v1/channels/${enc(channel)}/members${query({ ...q })}`);
  }

  /** Every member of a channel (user ids, ascending), all pages. */
  async allChannelMembers(channel: string): Promise<string[]> {
    const out: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.channelMembers(channel, { limit: 500, ...(cursor ? { cursor } : {}) });
      out.push(...page.members);
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
    return out;
  }

  /** Every channel you can see, all pages. */
  async channels(): Promise<Channel[]> {
    const out: Channel[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.channelPage({ limit: 500, ...(cursor ? { cursor } : {}) });
      out.push(...page.channels);
      cursor = page.next_cursor ?? undefined;
    } while (cursor);
    return out;
  }

  channelPage(q: PageQuery = {}): Promise<ChannelPage> {
    return this.request("GET", `/v1/me/channels${query({ ...q })}`);
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

  /** One page of the inbox (most recent activity first); `badge` and `mentions` count every channel. */
  inboxPage(q: PageQuery = {}): Promise<Inbox> {
    return this.request("GET", `/v1/me/inbox${query({ ...q })}`);
  }

  /** The whole inbox, every page. */
  async inbox(): Promise<Inbox> {
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

  sync(channels: SyncCursor[], limit?: number): Promise<SyncResult> {
    return this.request("POST", "/v1/sync", limit === undefined ? { channels } : { channels, limit });
  }

  async onlineCount(channel: string): Promise<number> {
    return (await this.request<{ online: number }>("GET",
      `/v1/channels/${encodeURIComponent(channel)}/presence`)).online;
  }

  // ---- rich messages ----------------------------------------------------------------------------

  /** A send over HTTP with the device's token (the MQTT payload; answered with the bridge's ack). */
  send(channel: string, payload: SendPayload): Promise<AckOk> {
    return this.request("POST", `/v1/channels/${enc(channel)}/messages`, payload);
  }

  /** A thread: the root with its state, and its replies above `after` (default 0), in seq order. */
  thread(channel: string, root: number, q: { after?: number; limit?: number } = {}): Promise<ThreadPage> {
    return this.request("GET", `/v1/channels/${enc(channel)}/threads/${root}${query({ ...q })}`);
  }

  /** The channel's pinned messages with their state, in seq order. */
  pins(channel: string): Promise<Pins> {
    return this.request("GET", `/v1/channels/${enc(channel)}/pins`);
  }

  // ---- attachments (docs/attachments.md) ---------------------------------------------------------

  /**
   * An absolute address for a URL the server handed out: a path (the `local` object store) is
   * relative to the API's base URL; a full URL (S3, `objects.public_url`) is returned as is.
   */
  resolveUrl(url: string): string {
    return /^[a-z][a-z0-9+.-]*:/i.test(url) ? url : `${this.baseUrl}${url}`;
  }

  /** Start an upload to a channel you are a member of: the record and the signed upload request. */
  createUpload(channel: string, file: { filename: string; contentType: string; size: number }): Promise<UploadStarted> {
    return this.request("POST", "/v1/uploads",
      { channel, filename: file.filename, content_type: file.contentType, size: file.size });
  }

  /**
   * Make the signed upload request of {@link createUpload} exactly as given (method, URL, headers;
   * no token): the bytes go to the object store.
   *
   * @throws MqchatError with the store's code (`url_expired`, `upload_too_large`, ...), or `network`.
   */
  async putUpload(started: UploadStarted, data: FileData): Promise<void> {
    const { method, url, headers } = started.upload;
    let res: Response;
    try {
      res = await this.fetchImpl(this.resolveUrl(url), { method, headers, body: data as BodyInit });
    } catch (err) {
      throw new MqchatError("network", `${method} upload: ${String(err)}`);
    }
    if (res.ok) {
      await res.arrayBuffer().catch(() => undefined);
      return;
    }
    const text = await res.text().catch(() => "");
    let code: string | undefined;
    let message: string | undefined;
    try {
      const error = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
      code = error?.code;
      message = error?.message;
    } catch {
      // S3 answers XML: reported by status below.
    }
    const retryAfter = Number(res.headers.get("retry-after"));
    const opts: { status: number; retryAfterMs?: number } = { status: res.status };
    if (retryAfter > 0) opts.retryAfterMs = retryAfter * 1000;
    const fallback = res.status === 413 ? "upload_too_large" : res.status === 429 ? "rate_limited"
      : res.status >= 500 ? "unavailable" : "url_invalid";
    throw new MqchatError(code ?? fallback, message ?? `${method} upload: HTTP ${res.status}`, opts);
  }

  /** Have the server verify the uploaded bytes (real size, type by magic bytes): the upload is then `ready`. */
  completeUpload(uploadId: string): Promise<Upload> {
    return this.request("POST", `/v1/uploads/${enc(uploadId)}/complete`);
  }

  /**
   * Fresh signed URLs of an attachment (members of its channel once it is in a message; its
   * uploader once it is complete). Resolve `url`/`thumbnail_url` with {@link resolveUrl}.
   */
  download(uploadId: string): Promise<Attachment> {
    return this.request("GET", `/v1/uploads/${enc(uploadId)}/download`);
  }

  // ---- search -------------------------------------------------------------------------------------

  /** Messages matching `q` in the channels you can see now, newest first (docs/search.md). */
  search(q: string, opts: SearchOptions = {}): Promise<SearchPage> {
    return this.request("GET", `/v1/search${query({ q, ...opts })}`);
  }

  // ---- servers ------------------------------------------------------------------------------------

  createServer(name: string, opts: { discoverable?: boolean } = {}): Promise<Server> {
    return this.request("POST", "/v1/servers", { name, ...opts });
  }

  server(id: string): Promise<Server> {
    return this.request("GET", `/v1/servers/${enc(id)}`);
  }

  editServer(id: string, changes: { name?: string; discoverable?: boolean }): Promise<Server> {
    return this.request("PATCH", `/v1/servers/${enc(id)}`, changes);
  }

  deleteServer(id: string): Promise<void> {
    return this.request("DELETE", `/v1/servers/${enc(id)}`);
  }

  async myServers(): Promise<Server[]> {
    return (await this.request<ServerList>("GET", "/v1/me/servers")).servers;
  }

  discoverableServers(q: PageQuery = {}): Promise<ServerList> {
    return this.request("GET", `/v1/servers${query({ discoverable: true, ...q })}`);
  }

  members(server: string, q: PageQuery = {}): Promise<MemberPage> {
    return this.request("GET", `/v1/servers/${enc(server)}/members${query({ ...q })}`);
  }

  joinServer(server: string): Promise<Joined> {
    return this.request("POST", `/v1/servers/${enc(server)}/join`);
  }

  leaveServer(server: string): Promise<void> {
    return this.request("POST", `/v1/servers/${enc(server)}/leave`);
  }

  transferServer(server: string, userId: string): Promise<Server> {
    return this.request("POST", `/v1/servers/${enc(server)}/transfer`, { user_id: userId });
  }

  /** Channels of a server you can see. */
  async serverChannels(server: string): Promise<ServerChannel[]> {
    return (await this.request<{ channels: ServerChannel[] }>("GET", `/v1/servers/${enc(server)}/channels`)).channels;
  }

  createServerChannel(server: string, name: string,
    opts: { private?: boolean; slow_mode_s?: number } = {}): Promise<ServerChannel> {
    return this.request("POST", `/v1/servers/${enc(server)}/channels`, { name, ...opts });
  }

  editServerChannel(channel: string, changes: { name?: string; slow_mode_s?: number }): Promise<ServerChannel> {
    return this.request("PATCH", `/v1/channels/${enc(channel)}`, changes);
  }

  deleteServerChannel(channel: string): Promise<void> {
    return this.request("DELETE", `/v1/channels/${enc(channel)}`);
  }

  // ---- roles and permissions ------------------------------------------------------------------------

  /** Highest position first, `@everyone` last. */
  async roles(server: string): Promise<Role[]> {
    return (await this.request<{ roles: Role[] }>("GET", `/v1/servers/${enc(server)}/roles`)).roles;
  }

  createRole(server: string, name: string, opts: { permissions?: string[]; position?: number } = {}): Promise<Role> {
    return this.request("POST", `/v1/servers/${enc(server)}/roles`, { name, ...opts });
  }

  editRole(server: string, role: string,
    changes: { name?: string; permissions?: string[]; position?: number }): Promise<Role> {
    return this.request("PATCH", `/v1/servers/${enc(server)}/roles/${enc(role)}`, changes);
  }

  deleteRole(server: string, role: string): Promise<void> {
    return this.request("DELETE", `/v1/servers/${enc(server)}/roles/${enc(role)}`);
  }

  addMemberRole(server: string, userId: string, role: string): Promise<{ changed: boolean }> {
    return this.request("PUT", `/v1/servers/${enc(server)}/members/${enc(userId)}/roles/${enc(role)}`);
  }

  removeMemberRole(server: string, userId: string, role: string): Promise<{ changed: boolean }> {
    return this.request("DELETE", `/v1/servers/${enc(server)}/members/${enc(userId)}/roles/${enc(role)}`);
  }

  async overwrites(channel: string): Promise<Overwrite[]> {
    return (await this.request<{ overwrites: Overwrite[] }>("GET", `/v1/channels/${enc(channel)}/permissions`))
      .overwrites;
  }

  setOverwrite(channel: string, target: "role" | "member", targetId: string,
    perms: { allow?: string[]; deny?: string[] }): Promise<Overwrite> {
    return this.request("PUT", `/v1/channels/${enc(channel)}/permissions/${target}/${enc(targetId)}`, perms);
  }

  deleteOverwrite(channel: string, target: "role" | "member", targetId: string): Promise<void> {
    return this.request("DELETE", `/v1/channels/${enc(channel)}/permissions/${target}/${enc(targetId)}`);
  }

  /** Your effective permissions in any channel you can see. */
  myPermissions(channel: string): Promise<MyPermissions> {
    return this.request("GET", `/v1/channels/${enc(channel)}/permissions/me`);
  }

  // ---- invites ------------------------------------------------------------------------------------

  createInvite(server: string,
    opts: { max_uses?: number; expires_in_s?: number; channel_id?: string } = {}): Promise<Invite> {
    return this.request("POST", `/v1/servers/${enc(server)}/invites`, opts);
  }

  async invites(server: string): Promise<Invite[]> {
    return (await this.request<{ invites: Invite[] }>("GET", `/v1/servers/${enc(server)}/invites`)).invites;
  }

  previewInvite(code: string): Promise<InvitePreview> {
    return this.request("GET", `/v1/invites/${enc(code)}`);
  }

  acceptInvite(code: string): Promise<Joined> {
    return this.request("POST", `/v1/invites/${enc(code)}/accept`);
  }

  revokeInvite(code: string): Promise<Invite> {
    return this.request("DELETE", `/v1/invites/${enc(code)}`);
  }

  // ---- moderation ---------------------------------------------------------------------------------

  kick(server: string, userId: string): Promise<void> {
    return this.request("DELETE", `/v1/servers/${enc(server)}/members/${enc(userId)}`);
  }

  async bans(server: string): Promise<Ban[]> {
    return (await this.request<{ bans: Ban[] }>("GET", `/v1/servers/${enc(server)}/bans`)).bans;
  }

  ban(server: string, userId: string, reason?: string): Promise<void> {
    return this.request("PUT", `/v1/servers/${enc(server)}/bans/${enc(userId)}`,
      reason === undefined ? undefined : { reason });
  }

  unban(server: string, userId: string): Promise<{ changed: boolean }> {
    return this.request("DELETE", `/v1/servers/${enc(server)}/bans/${enc(userId)}`);
  }

  timeout(server: string, userId: string, untilMs: number): Promise<ServerMember> {
    return this.request("PUT", `/v1/servers/${enc(server)}/members/${enc(userId)}/timeout`, { until_ms: untilMs });
  }

  clearTimeout(server: string, userId: string): Promise<ServerMember> {
    return this.request("DELETE", `/v1/servers/${enc(server)}/members/${enc(userId)}/timeout`);
  }

  auditLog(server: string, q: PageQuery = {}): Promise<AuditPage> {
    return this.request("GET", `/v1/servers/${enc(server)}/audit-log${query({ ...q })}`);
  }

  // ---- users --------------------------------------------------------------------------------------

  user(id: string): Promise<Profile> {
    return this.request("GET", `/v1/users/${enc(id)}`);
  }

  /** Exact username, ignoring case. */
  userByName(username: string): Promise<Profile> {
    return this.request("GET", `/v1/users/by-name/${enc(username)}`);
  }

  me(): Promise<MyProfile> {
    return this.request("GET", "/v1/me");
  }

  /** A field left out keeps its value; `null` clears it. */
  editMe(changes: { display_name?: string | null; avatar_url?: string | null }): Promise<MyProfile> {
    return this.request("PATCH", "/v1/me", changes);
  }
}
