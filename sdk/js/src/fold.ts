/**
 * Message state as a fold of the channel's event stream: the client's copy of `mqchat/fold.py`.
 *
 * Every change to a message (edit, delete, reaction, pin) is an event in the channel's one order
 * (docs/protocol.md, *The fold*). The state of every message is `fold(events in seq order)`:
 *
 *   text      S[e.seq] = new message; if S[e.thread] exists: its reply_count += 1, last_reply_ts = e.ts
 *   edit      S[e.target] exists, not deleted: body = e.body, edited_ts = e.ts
 *   delete    S[e.target] exists, not deleted: deleted, body "", reactions cleared, unpinned
 *   reaction  S[e.target] exists, not deleted: add / remove e.sender for e.emoji (≤ 20 distinct emoji)
 *   pin/unpin S[e.target] exists, not deleted: pinned = true / false
 *   other     no change
 *
 * A message's state depends only on its own event and later events naming it, so folding any
 * contiguous window of a channel's events (a history page and everything after it) gives the
 * exact state of every message inside the window. {@link ChannelFold} keeps such a window;
 * {@link fold} and {@link applyEvent} are pure.
 */

import { type Message, type MessageStateOut, TARGETED_KINDS } from "./types.js";

/** Most distinct emoji on one message (`mqchat.schema.MAX_REACTION_EMOJI`). */
export const MAX_REACTION_EMOJI = 20;

/** What the fold reads of an event: a stream message and a history row both fit. */
export type FoldEvent = Pick<Message, "seq" | "sender" | "ts" | "kind" | "body">
  & Partial<Pick<Message, "target" | "emoji" | "op" | "thread">>;

export interface MessageState {
  readonly seq: number;
  readonly sender: string;
  readonly kind: string;
  readonly ts: number;
  readonly body: string;
  readonly thread: number | null;
  readonly edited_ts: number | null;
  readonly deleted: boolean;
  readonly pinned: boolean;
  /** `[emoji, users]` in order of each emoji's first reaction; never an empty set. */
  readonly reactions: readonly (readonly [string, ReadonlySet<string>])[];
  readonly reply_count: number;
  readonly last_reply_ts: number | null;
}

/** seq → state: one channel's folded messages. */
export type FoldedStates = Map<number, MessageState>;

function react(m: MessageState, user: string, emoji: string, op: string | null | undefined): MessageState {
  const users = m.reactions.find(([e]) => e === emoji)?.[1];
  let reactions: (readonly [string, ReadonlySet<string>])[];
  if (op === "add") {
    if (users?.has(user) || (!users && m.reactions.length >= MAX_REACTION_EMOJI)) return m;
    reactions = users
      ? m.reactions.map(([e, u]) => (e === emoji ? [e, new Set([...u, user])] as const : [e, u] as const))
      : [...m.reactions, [emoji, new Set([user])] as const];
  } else if (op === "remove" && users?.has(user)) {
    reactions = m.reactions
      .map(([e, u]) => (e === emoji ? [e, new Set([...u].filter((x) => x !== user))] as const : [e, u] as const))
      .filter(([, u]) => u.size > 0);
  } else {
    return m;
  }
  return { ...m, reactions };
}

/**
 * Apply one event to `states` (in place; the touched states are replaced, never mutated).
 * Returns the seqs whose state changed: the new message (and its thread root), or the target.
 */
export function applyEvent(states: FoldedStates, e: FoldEvent): number[] {
  if (TARGETED_KINDS.has(e.kind)) {
    const t = e.target != null ? states.get(e.target) : undefined;
    if (!t || t.deleted) return [];
    let next: MessageState = t;
    if (e.kind === "edit") next = { ...t, body: e.body, edited_ts: e.ts };
    else if (e.kind === "delete") next = { ...t, deleted: true, body: "", reactions: [], pinned: false };
    else if (e.kind === "reaction" && e.emoji != null) next = react(t, e.sender, e.emoji, e.op);
    else if (e.kind === "pin" || e.kind === "unpin") next = { ...t, pinned: e.kind === "pin" };
    if (next === t) return [];
    states.set(t.seq, next);
    return [t.seq];
  }
  states.set(e.seq, {
    seq: e.seq, sender: e.sender, kind: e.kind, ts: e.ts, body: e.body, thread: e.thread ?? null, edited_ts: null,
    deleted: false, pinned: false, reactions: [], reply_count: 0, last_reply_ts: null,
  });
  const root = e.thread != null ? states.get(e.thread) : undefined;
  if (!root) return [e.seq];
  states.set(root.seq, { ...root, reply_count: root.reply_count + 1, last_reply_ts: e.ts });
  return [e.seq, root.seq];
}

/**
 * Fold `events` (ascending seq) onto `states` (a new map by default). Folding a prefix and then
 * the rest equals folding everything at once, as on the server.
 */
export function fold(events: Iterable<FoldEvent>, states: FoldedStates = new Map()): FoldedStates {
  for (const e of events) applyEvent(states, e);
  return states;
}

/** The state as history shows it to `me` (`state` of `GET /v1/channels/{id}/messages`). */
export function stateOut(s: MessageState, me: string | null): MessageStateOut {
  return {
    body: s.body, edited_ts: s.edited_ts, deleted: s.deleted, pinned: s.pinned,
    reactions: s.reactions.map(([emoji, users]) => ({ emoji, count: users.size, me: me !== null && users.has(me) })),
    reply_count: s.reply_count, last_reply_ts: s.last_reply_ts,
  };
}

/** A message with its state now, for display (events that change messages are not listed). */
export interface MessageView {
  message: Message;
  state: MessageStateOut;
}

/**
 * One channel's contiguous window of events and their fold: what the client holds to show a
 * channel. Live events are appended in seq order; an older history page is prepended (and the
 * window refolded, since later events may name its messages); a new epoch replaces it all.
 */
export class ChannelFold {
  private events: Message[] = [];
  private states: FoldedStates = new Map();
  /** Seqs of the window's messages (not events), ascending. */
  private order: number[] = [];

  /** The epoch of the window (0: empty). */
  get epoch(): number {
    return this.events[0]?.epoch ?? 0;
  }

  /** The first and last seq held (0 when empty). */
  get firstSeq(): number {
    return this.events[0]?.seq ?? 0;
  }

  get lastSeq(): number {
    return this.events.at(-1)?.seq ?? 0;
  }

  /** Replace the window with `events` (a latest page, after a new channel or an epoch reset). */
  reset(events: readonly Message[]): void {
    this.events = [...events];
    this.refold();
  }

  /**
   * Append the next event (the client delivers them gap-free, in order). An event that does not
   * continue the window (another epoch, a gap) starts a new window with it. Returns the seqs of
   * the messages whose state changed.
   */
  append(e: Message): number[] {
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
  prepend(older: readonly Message[]): boolean {
    const first = this.events[0];
    const page = older.filter((m) => !first || (m.epoch === first.epoch && m.seq < first.seq));
    if (!page.length) return older.length === 0;
    if (first && page.at(-1)!.seq !== first.seq - 1) return false;
    this.events = [...page, ...this.events];
    this.refold();
    return true;
  }

  /** The folded state of message `seq`, if the window holds it. */
  state(seq: number): MessageState | undefined {
    return this.states.get(seq);
  }

  /** The raw event at `seq`, if held. */
  event(seq: number): Message | undefined {
    const first = this.firstSeq;
    return first ? this.events[seq - first] : undefined;
  }

  /** Every message of the window (not the events changing them) with its state for `me`, in seq order. */
  view(me: string | null): MessageView[] {
    const out: MessageView[] = [];
    for (const seq of this.order) {
      const message = this.event(seq);
      const s = this.states.get(seq);
      if (message && s) out.push({ message, state: stateOut(s, me) });
    }
    return out;
  }

  private refold(): void {
    this.states = fold(this.events);
    this.order = this.events.filter((e) => !TARGETED_KINDS.has(e.kind)).map((e) => e.seq);
  }
}
