/** The topic grammar of docs/protocol.md, in one place: nobody else in the SDK writes topic strings. */

const ID = /^[A-Za-z0-9_-]{1,64}$/;

/** Throws a TypeError for an id outside `[A-Za-z0-9_-]{1,64}` (it would break the topic grammar). */
export function checkId(what: string, id: string): string {
  if (!ID.test(id)) throw new TypeError(`${what} ${JSON.stringify(id)}: expected 1-64 characters from [A-Za-z0-9_-]`);
  return id;
}

export const topics = {
  send: (user: string, device: string, channel: string): string => `in/${user}/${device}/${channel}`,
  channel: (channel: string): string => `ch/${channel}`,
  ack: (user: string, device: string): string => `dev/${user}/${device}/ack`,
  userEvents: (user: string): string => `user/${user}/events`,
  devicePresence: (user: string, device: string): string => `presence/${user}/${device}`,
  userPresence: (user: string): string => `presence/${user}`,
  typing: (channel: string, user: string): string => `typing/${channel}/${user}`,
  typingFilter: (channel: string): string => `typing/${channel}/+`,
  /** In-band token refresh: the bare JWT, to the broker only (never delivered). */
  auth: (user: string, device: string): string => `auth/${user}/${device}`,
} as const;

/** What an incoming topic is, or null for a topic the SDK does not subscribe to. */
export type ParsedTopic =
  | { kind: "channel"; channel: string }
  | { kind: "ack" }
  | { kind: "userEvents" }
  | { kind: "userPresence"; user: string }
  | { kind: "typing"; channel: string; user: string };

export function parseTopic(topic: string): ParsedTopic | null {
  const p = topic.split("/");
  if (p[0] === "ch" && p.length === 2 && p[1]) return { kind: "channel", channel: p[1] };
  if (p[0] === "dev" && p.length === 4 && p[3] === "ack") return { kind: "ack" };
  if (p[0] === "user" && p.length === 3 && p[2] === "events") return { kind: "userEvents" };
  if (p[0] === "presence" && p.length === 2 && p[1]) return { kind: "userPresence", user: p[1] };
  if (p[0] === "typing" && p.length === 3 && p[1] && p[2]) return { kind: "typing", channel: p[1], user: p[2] };
  return null;
}
