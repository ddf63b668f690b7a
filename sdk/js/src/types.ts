/**
 * Wire types of the mqchat v1 contract (docs/protocol.md, docs/http.md, docs/sync.md).
 *
 * Field names are the wire's (snake_case), so a payload can be passed through untouched.
 */

/** A message kind. v1 defines only `"text"`; later kinds are added here when the server defines them. */
export type MessageKind = "text" | (string & {});

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
  body: string;
  v: number;
}

/** What a device publishes on `in/{me}/{device}/{channel}`. */
export interface SendPayload {
  cmid: string;
  kind: MessageKind;
  body: string;
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
  error: { code: string; message: string };
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

/** `user/{me}/events`; unknown types are passed on as they are (forward compatible). */
export type UserEvent = ReadEvent | MembershipEvent | { type: string; [field: string]: unknown };

export interface MqttEndpoint {
  host: string;
  port: number;
  ws_url: string;
}

export interface LoginResult {
  token: string;
  user_id: string;
  device_id: string;
  /** Seconds since the Unix epoch. */
  expires_at: number;
  mqtt: MqttEndpoint;
}

export interface UserCreated {
  user_id: string;
  username: string;
}

export interface Channel {
  channel_id: string;
  kind: "direct" | "group";
  name: string | null;
  created_by: string;
  created_ms: number;
  members: string[];
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
  kind: "direct" | "group";
  name: string | null;
  members: string[];
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
