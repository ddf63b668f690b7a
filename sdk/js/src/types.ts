/**
 * Wire types of the mqchat v1 contract (docs/protocol.md, docs/http.md, docs/sync.md).
 *
 * Field names are the wire's (snake_case), so a payload can be passed through untouched.
 */

/**
 * A message kind: `"text"` and `"file"` (an attachment, docs/attachments.md) carry content; the others are events that change an earlier message,
 * named by `target` (docs/protocol.md, *Rich messages*). Open: kinds the server adds later pass through.
 */
export type MessageKind = "text" | "file" | "edit" | "delete" | "reaction" | "pin" | "unpin" | (string & {});

/** Kinds whose `target` names the message they change (they never count toward unread). */
export const TARGETED_KINDS: ReadonlySet<string> = new Set(["edit", "delete", "reaction", "pin", "unpin"]);

/** One emoji of a message's state as the server shows it to the user asking. */
export interface ReactionOut {
  emoji: string;
  count: number;
  /** Whether the user asking reacted with this emoji. */
  me: boolean;
}

/** A message's folded state (history's `state`, and {@link MessageView.state}). */
export interface MessageStateOut {
  body: string;
  edited_ts: number | null;
  deleted: boolean;
  pinned: boolean;
  /** In order of each emoji's first reaction. */
  reactions: ReactionOut[];
  reply_count: number;
  last_reply_ts: number | null;
}

/** A channel message as it arrives on `ch/{channel}` and in history. */
export interface Message {
  /** Snowflake id, a string: JSON numbers above 2^53 lose precision in JavaScript. */
  id: string;
  seq: number;
  epoch: number;
  channel: string;
  sender: string;
  device: string;
  cmid: string;
  /** Milliseconds since the Unix epoch, when the server ordered the message. */
  ts: number;
  kind: MessageKind;
  /** `""` for kinds without a body. */
  body: string;
  /** `edit`, `delete`, `reaction`, `pin`, `unpin`: the seq of the message changed. */
  target?: number | null;
  /** `reaction`: the emoji, and `"add"` or `"remove"`. */
  emoji?: string | null;
  op?: "add" | "remove" | null;
  /** `text`: the seq of the message it quotes. */
  reply_to?: number | null;
  /** `text`: the seq of the thread root it replies under. */
  thread?: number | null;
  /** Counting events (texts) of the epoch up to this one: unread = last count_seq − count_seq at the read marker. */
  count_seq?: number;
  /** History and sync only, on messages (not on the events that change them): the fold as of the answer. */
  state?: MessageStateOut | null;
  /** `file`: the file, with fresh signed URLs; `null` (or absent) on every other message and once deleted. */
  attachment?: Attachment | null;
  v: number;
}

/**
 * A file as the server shows it, on a `file` message and from `GET /v1/uploads/{id}/download`
 * (docs/attachments.md). Fields without a value are absent (or `null` from the download endpoint).
 */
export interface Attachment {
  /** The upload id: {@link MqchatClient.downloadUrl} gives fresh URLs for it. */
  id: string;
  /** The cleaned file name. */
  filename: string;
  /** Verified by the server from the stored bytes. */
  content_type: string;
  size: number;
  /** Signed, no token needed; a path (the `local` store) is relative to the API's base URL. */
  url: string;
  /** When `url` and `thumbnail_url` expire, in seconds since the epoch. */
  url_expires: number;
  /** Images only. */
  width?: number | null;
  height?: number | null;
  /** Images only, once the workers made it: a JPEG or PNG whose longest side is `objects.thumbnail_px`. */
  thumbnail_url?: string | null;
  thumbnail_type?: string | null;
}

/** An upload record (`POST /v1/uploads`, `POST /v1/uploads/{id}/complete`). */
export interface Upload {
  upload_id: string;
  channel: string;
  filename: string;
  content_type: string;
  size: number;
  /** `pending` until completed, then `ready`; `attached` once in a message. */
  state: "pending" | "ready" | "attached" | (string & {});
  /** Unless sent in a message by then, the upload is deleted. */
  expires_ms: number;
  width: number | null;
  height: number | null;
}

/** `POST /v1/uploads`: the record and the request that uploads the bytes, to be made as it is. */
export interface UploadStarted extends Upload {
  upload: {
    method: string;
    /** Signed; a path is relative to the API's base URL. */
    url: string;
    headers: Record<string, string>;
    /** Seconds since the epoch. */
    expires_at: number;
  };
}

/** What a device publishes on `in/{me}/{device}/{channel}`. */
export interface SendPayload {
  cmid: string;
  kind: MessageKind;
  body?: string;
  target?: number;
  emoji?: string;
  op?: "add" | "remove";
  reply_to?: number;
  thread?: number;
  /** `file` only (required): the id of a completed upload. */
  upload?: string;
  v?: 1;
}

/** The bridge's answer on `dev/{me}/{device}/ack`. */
export type Ack = AckOk | AckError;

export interface AckOk {
  cmid: string;
  channel: string;
  ok: true;
  id: string;
  seq: number;
  epoch: number;
  v?: number;
}

export interface AckError {
  cmid: string | null;
  channel: string;
  ok: false;
  /** `retry_after_ms` only for waits (`timed_out`, `slow_mode`). */
  error: { code: string; message: string; retry_after_ms?: number };
  v?: number;
}

export type PresenceStatus = "online" | "away" | "offline";

/** The server's aggregate on `presence/{user}`. */
export interface UserPresence {
  user: string;
  status: PresenceStatus;
  last_seen: number;
}

export interface TypingEvent {
  channel: string;
  user: string;
  typing: boolean;
}

export interface ReadEvent {
  type: "read";
  channel: string;
  epoch: number;
  seq: number;
  unread: number;
  mentions: number;
  badge: number;
}

export interface MembershipEvent {
  type: "membership";
  channel: string;
  action: "added" | "removed";
  by: string;
}

/** The user joined a server, left it, or was removed from it (`reason`: `kick` or `ban`). */
export interface ServerEvent {
  type: "server";
  server: string;
  action: "joined" | "left" | "removed";
  by: string;
  reason?: "kick" | "ban";
}

/** `user/{me}/events`; unknown types are passed on as they are (forward compatible). */
export type UserEvent = ReadEvent | MembershipEvent | ServerEvent | { type: string; [field: string]: unknown };

export interface MqttEndpoint {
  host: string;
  port: number;
  ws_url: string;
  /**
   * With an external broker, how often to re-publish this device's presence status (the
   * heartbeat, docs/protocol.md "Presence"); null with the embedded broker. Absent from older servers.
   */
  presence_refresh_ms?: number | null;
}

export interface LoginResult {
  /** The access token (JWT): the bearer token and the MQTT password. */
  token: string;
  /** Opaque, spent by one refresh (rotation); absent from sessions made elsewhere. Keep it in secure storage. */
  refresh_token?: string;
  user_id: string;
  device_id: string;
  /** Seconds since the Unix epoch. */
  expires_at: number;
  mqtt: MqttEndpoint;
}

/** `POST /v1/token/refresh`: a new access token and a new refresh token (the one presented is spent). */
export interface TokenPair {
  token: string;
  refresh_token: string;
  user_id: string;
  device_id: string;
  expires_at: number;
}

export interface LoggedOut {
  devices: "this" | "all";
  /** Logins (refresh token families) ended. */
  sessions_ended: number;
}

export interface UserCreated {
  user_id: string;
  username: string;
}

export interface Channel {
  channel_id: string;
  kind: "direct" | "group" | "server";
  name: string | null;
  created_by: string;
  created_ms: number;
  /** The first 20 members by user id; all of them when `members_next_cursor` is null. */
  members: string[];
  /** Pass to {@link HttpApi.channelMembers} for the rest; null when `members` is complete. */
  members_next_cursor: string | null;
}

/** `GET /v1/channels/{id}/members`: a page of a channel's members by user id. */
export interface ChannelMembersPage {
  channel_id: string;
  members: string[];
  /** Pass as `cursor` for the next page; null on the last. A page may be short, even empty, while this is set. */
  next_cursor: string | null;
}

export interface CreatedChannel extends Channel {
  created: boolean;
}

export interface HistoryPage {
  channel: string;
  epoch: number;
  last_seq: number;
  has_more: boolean;
  messages: Message[];
}

export interface ReadState {
  channel: string;
  epoch: number;
  seq: number;
  unread: number;
  mentions: number;
  badge: number;
}

export interface InboxEntry {
  channel_id: string;
  kind: "direct" | "group" | "server";
  name: string | null;
  /** The first 20 members by user id; all of them when `members_next_cursor` is null. */
  members: string[];
  /** Pass to {@link HttpApi.channelMembers} for the rest; null when `members` is complete. */
  members_next_cursor: string | null;
  epoch: number;
  last_seq: number;
  read_seq: number;
  unread: number;
  mentions: number;
  last_message: Message | null;
  activity_ms: number;
}

export interface Inbox {
  channels: InboxEntry[];
  badge: number;
  mentions: number;
  /** Pass as `cursor` for the next page; null on the last page. */
  next_cursor?: string | null;
}

export interface SyncCursor {
  channel: string;
  epoch: number;
  last_seq: number;
}

export interface SyncChannel {
  channel: string;
  status: "ok" | "new" | "reset";
  epoch: number;
  last_seq: number;
  has_more: boolean;
  messages: Message[];
}

export interface SyncResult {
  channels: SyncChannel[];
  removed: string[];
  badge: number;
}

export interface ChannelPage {
  channels: Channel[];
  next_cursor: string | null;
}

/** `GET /v1/channels/{id}/threads/{root}`. */
export interface ThreadPage {
  channel: string;
  /** The root with its state (`reply_count`, `last_reply_ts`). */
  root: Message;
  /** In seq order, above the `after` asked for. */
  replies: Message[];
  has_more: boolean;
}

/** `GET /v1/channels/{id}/pins`. */
export interface Pins {
  channel: string;
  /** The pinned messages with their state, in seq order. */
  messages: Message[];
}

// ---- search (docs/search.md) -----------------------------------------------------------------

export interface SearchHit {
  /** The message as history returns it (with its folded `state`). */
  message: Message;
  /** The channel's server; null for direct and group channels. */
  server: string | null;
  has_file: boolean;
  /** HTML-escaped text around the matches, each in `<mark>…</mark>`. */
  snippet: string;
}

export interface SearchPage {
  hits: SearchHit[];
  /** Pass back as `cursor`, with the same query and filters, for the next page; null on the last. */
  next_cursor: string | null;
}

// ---- servers, roles, invites, moderation, users (docs/http.md, docs/permissions.md) ------------

export interface Server {
  server_id: string;
  name: string;
  owner_id: string;
  discoverable: boolean;
  created_ms: number;
}

export interface ServerList {
  servers: Server[];
  next_cursor?: string | null;
}

export interface Joined {
  server: Server;
  /** False when you were already a member. */
  joined: boolean;
}

export interface ServerMember {
  user_id: string;
  username: string;
  display_name: string | null;
  joined_ms: number;
  role_ids: string[];
  timeout_until_ms: number | null;
}

export interface MemberPage {
  members: ServerMember[];
  next_cursor: string | null;
}

export interface Role {
  role_id: string;
  name: string;
  position: number;
  /** Permission names, e.g. `["view_channel", "send_messages"]`. */
  permissions: string[];
  /** `@everyone` (its id is the server's). */
  everyone: boolean;
}

export interface ServerChannel {
  channel_id: string;
  server_id: string;
  name: string | null;
  created_by: string;
  created_ms: number;
  slow_mode_s: number;
}

export interface Overwrite {
  channel_id: string;
  target: "role" | "member";
  target_id: string;
  allow: string[];
  deny: string[];
}

export interface MyPermissions {
  channel_id: string;
  server_id: string | null;
  permissions: string[];
  timeout_until_ms: number | null;
  slow_mode_s: number;
}

export interface Invite {
  code: string;
  server_id: string;
  channel_id: string | null;
  creator: string;
  max_uses: number | null;
  uses: number;
  expires_ms: number | null;
  revoked: boolean;
  created_ms: number;
}

export interface InvitePreview {
  code: string;
  server_id: string;
  server_name: string;
  channel_id: string | null;
  channel_name: string | null;
  expires_ms: number | null;
  usable: boolean;
  reason: "invite_revoked" | "invite_expired" | "invite_used_up" | null;
}

export interface Ban {
  server_id: string;
  user_id: string;
  actor: string;
  reason: string | null;
  created_ms: number;
}

export interface AuditEntry {
  entry_id: number;
  actor: string;
  action: string;
  target: string | null;
  details: Record<string, unknown>;
  created_ms: number;
}

export interface AuditPage {
  entries: AuditEntry[];
  next_cursor: string | null;
}

export interface Profile {
  user_id: string;
  username: string;
  display_name: string | null;
  avatar_url: string | null;
}

export interface MyProfile extends Profile {
  created_ms: number;
}
