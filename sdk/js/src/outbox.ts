/**
 * The outbox: every send stays here until its ack arrives, and is republished with the **same
 * `cmid`** after `ackTimeoutMs` and after every reconnect (docs/protocol.md, "Retries and
 * idempotency"); the server stores a retried `(channel, sender, cmid)` once.
 *
 * Entries are persisted through a {@link KeyValueStorage} (one JSON document per user and device),
 * so sends survive an app restart when the storage does. Which entries are due is a pure function.
 */

import type { KeyValueStorage } from "./storage.js";

export interface OutboxEntry {
  cmid: string;
  channel: string;
  /** The payload exactly as published (cmid included). */
  payload: Record<string, unknown>;
  createdMs: number;
  /** When it was last published; 0: never. */
  sentMs: number;
  attempts: number;
}

/** Entries to publish now: never sent, or sent `ackTimeoutMs` ago or longer without an ack. */
export function dueEntries(entries: Iterable<OutboxEntry>, nowMs: number, ackTimeoutMs: number): OutboxEntry[] {
  const due: OutboxEntry[] = [];
  for (const e of entries) if (e.sentMs === 0 || nowMs - e.sentMs >= ackTimeoutMs) due.push(e);
  return due.sort((a, b) => a.createdMs - b.createdMs);
}

export class Outbox {
  private readonly entries = new Map<string, OutboxEntry>();
  private writing: Promise<void> = Promise.resolve();

  /**
   * @param storage where entries are persisted.
   * @param key the storage key (the client uses `mqchat:outbox:{user}:{device}`).
   */
  constructor(private readonly storage: KeyValueStorage, private readonly key: string) {}

  /** Load what a previous run left (call once, before use). Unreadable contents are dropped. */
  async load(): Promise<void> {
    const raw = await this.storage.getItem(this.key);
    if (!raw) return;
    try {
      const list = JSON.parse(raw) as OutboxEntry[];
      for (const e of list) if (typeof e?.cmid === "string" && typeof e.channel === "string") this.entries.set(e.cmid, e);
    } catch {
      await this.storage.removeItem(this.key);
    }
  }

  get size(): number {
    return this.entries.size;
  }

  get(cmid: string): OutboxEntry | undefined {
    return this.entries.get(cmid);
  }

  all(): OutboxEntry[] {
    return [...this.entries.values()].sort((a, b) => a.createdMs - b.createdMs);
  }

  async add(entry: OutboxEntry): Promise<void> {
    this.entries.set(entry.cmid, entry);
    await this.persist();
  }

  /** Record a publish (not persisted on its own: a restart resends everything anyway). */
  markSent(cmid: string, nowMs: number): void {
    const e = this.entries.get(cmid);
    if (e) {
      e.sentMs = nowMs;
      e.attempts += 1;
    }
  }

  /** Mark every entry as never sent: after a reconnect, everything is republished at once. */
  resetSent(): void {
    for (const e of this.entries.values()) e.sentMs = 0;
  }

  due(nowMs: number, ackTimeoutMs: number): OutboxEntry[] {
    return dueEntries(this.entries.values(), nowMs, ackTimeoutMs);
  }

  async remove(cmid: string): Promise<OutboxEntry | undefined> {
    const e = this.entries.get(cmid);
    if (e) {
      this.entries.delete(cmid);
      await this.persist();
    }
    return e;
  }

  private persist(): Promise<void> {
    // Writes are chained so they land in order even on an asynchronous storage.
    const snapshot = JSON.stringify(this.all());
    this.writing = this.writing.then(async () => {
      if (snapshot === "[]") await this.storage.removeItem(this.key);
      else await this.storage.setItem(this.key, snapshot);
    });
    return this.writing;
  }
}
