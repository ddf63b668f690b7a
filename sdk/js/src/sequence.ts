/**
 * Per-channel seq tracking for the live stream (docs/sync.md, "While connected").
 *
 * A client keeps, per channel, `(epoch, lastSeq)`: the highest seq it holds with no gap below it.
 * {@link classifyIncoming} is the pure rule; {@link ChannelTracker} applies it, holds messages
 * that arrive beyond a gap until the gap is filled, and folds sync answers in.
 */

import type { Message, SyncChannel } from "./types.js";

export interface Cursor {
  epoch: number;
  lastSeq: number;
}

export type Verdict =
  /** `seq == lastSeq + 1` in the same epoch. */
  | "append"
  /** `seq <= lastSeq`: already held. */
  | "duplicate"
  /** `seq > lastSeq + 1`: fetch what is missing first. */
  | "gap"
  /** Another epoch: the channel's history was reset; reload it. */
  | "reset"
  /** No cursor for the channel yet (just joined): sync it. */
  | "unknown";

export function classifyIncoming(cursor: Cursor | undefined, msg: Pick<Message, "epoch" | "seq">): Verdict {
  if (!cursor) return "unknown";
  if (msg.epoch !== cursor.epoch) return "reset";
  if (msg.seq <= cursor.lastSeq) return "duplicate";
  if (msg.seq === cursor.lastSeq + 1) return "append";
  return "gap";
}

/** What to do after offering a live message. */
export interface Offer {
  /** Messages now in order, to show. */
  deliver: Message[];
  /** The channel needs a sync (a gap, a new epoch or no cursor); the message is held until then. */
  needSync: boolean;
}

/** The result of folding one channel of a sync answer in. */
export interface Applied {
  /** Messages after the old cursor, in order (status `ok`, plus held messages that now fit). */
  deliver: Message[];
  /** For `new` and `reset`: the latest page, which replaces whatever the client showed. */
  replace: Message[] | null;
  /** The server has more after the new cursor: sync again. */
  more: boolean;
}

export class ChannelTracker {
  private readonly cursors = new Map<string, Cursor>();
  private readonly held = new Map<string, Map<number, Message>>();
  private readonly syncing = new Set<string>();

  cursor(channel: string): Cursor | undefined {
    return this.cursors.get(channel);
  }

  channels(): string[] {
    return [...this.cursors.keys()];
  }

  /** `(channel, epoch, last_seq)` of every channel held, for `POST /v1/sync`. */
  syncCursors(only?: Iterable<string>): { channel: string; epoch: number; last_seq: number }[] {
    const names = only ? [...only] : [...this.cursors.keys()];
    const out = [];
    for (const channel of names) {
      const c = this.cursors.get(channel);
      if (c) out.push({ channel, epoch: c.epoch, last_seq: c.lastSeq });
    }
    return out;
  }

  drop(channel: string): void {
    this.cursors.delete(channel);
    this.held.delete(channel);
    this.syncing.delete(channel);
  }

  /** A message from `ch/{channel}`. */
  offer(msg: Message): Offer {
    const verdict = classifyIncoming(this.cursors.get(msg.channel), msg);
    if (verdict === "duplicate") return { deliver: [], needSync: false };
    if (verdict === "append" && !this.syncing.has(msg.channel)) {
      this.cursors.set(msg.channel, { epoch: msg.epoch, lastSeq: msg.seq });
      return { deliver: [msg, ...this.drain(msg.channel)], needSync: false };
    }
    let held = this.held.get(msg.channel);
    if (!held) this.held.set(msg.channel, (held = new Map()));
    held.set(msg.seq, msg);
    const start = !this.syncing.has(msg.channel);
    this.syncing.add(msg.channel);
    return { deliver: [], needSync: start };
  }

  /** Mark a channel as being synced (held messages wait for {@link applySync}). */
  beginSync(channel: string): void {
    this.syncing.add(channel);
  }

  /** Fold one channel of a sync answer in. Call {@link endSync} when its paging is over. */
  applySync(ch: SyncChannel): Applied {
    if (ch.status === "ok") {
      const cursor = this.cursors.get(ch.channel) ?? { epoch: ch.epoch, lastSeq: 0 };
      const deliver: Message[] = [];
      for (const m of ch.messages) {
        if (m.epoch === cursor.epoch && m.seq === cursor.lastSeq + 1) {
          cursor.lastSeq = m.seq;
          deliver.push(m);
        }
      }
      this.cursors.set(ch.channel, cursor);
      return { deliver, replace: null, more: ch.has_more };
    }
    // new / reset: the latest page; anything held from another epoch is stale.
    const last = ch.messages.at(-1);
    this.cursors.set(ch.channel, { epoch: ch.epoch, lastSeq: last ? last.seq : ch.last_seq });
    const held = this.held.get(ch.channel);
    if (held) for (const [seq, m] of held) if (m.epoch !== ch.epoch) held.delete(seq);
    return { deliver: [], replace: ch.messages, more: false };
  }

  /**
   * The sync of a channel is over: release held messages that now follow the cursor. Returns them
   * and whether a gap remains (the caller syncs again).
   */
  endSync(channel: string): Offer {
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
  abandonSync(channel: string): void {
    this.syncing.delete(channel);
  }

  private drain(channel: string): Message[] {
    const held = this.held.get(channel);
    const cursor = this.cursors.get(channel);
    if (!held || !cursor) return [];
    const out: Message[] = [];
    for (const [seq, m] of held) if (m.epoch !== cursor.epoch || seq <= cursor.lastSeq) held.delete(seq);
    for (let next = held.get(cursor.lastSeq + 1); next; next = held.get(cursor.lastSeq + 1)) {
      held.delete(next.seq);
      cursor.lastSeq = next.seq;
      out.push(next);
    }
    if (held.size === 0) this.held.delete(channel);
    return out;
  }
}
