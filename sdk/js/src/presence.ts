/**
 * A device's presence payloads (docs/protocol.md, "Presence"), pure so they can be tested alone.
 *
 *   before each CONNECT   conn = connId()            a fresh id names the connection
 *   last will             {"status":"offline","ts":0,"conn":C}     QoS 1, retained
 *   after CONNACK         {"status":"online","ts":<ms>,"conn":C}   QoS 1, retained
 *   heartbeat             the current status again, same conn, fresh ts, every presence_refresh_ms
 *   clean disconnect      {"status":"offline","ts":<ms>,"conn":C}  before DISCONNECT
 *
 * All on `presence/{me}/{device}`. The `conn` lets the server end only the connection a late will
 * belongs to, not the one that replaced it.
 */

import type { PresenceStatus } from "./types.js";

/** What a device publishes on `presence/{me}/{device}`. */
export interface DevicePresence {
  status: PresenceStatus;
  /** Milliseconds since the epoch; 0 in the will (it is sent later, by the broker). */
  ts: number;
  conn: string;
}

/** Random bytes: WebCrypto where there is one (browsers, Node ≥ 19, Hermes with a polyfill), else `Math.random`. */
function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  const cryptoApi = (globalThis as { crypto?: { getRandomValues?: (a: Uint8Array) => Uint8Array } }).crypto;
  if (cryptoApi?.getRandomValues) return cryptoApi.getRandomValues(out);
  for (let i = 0; i < n; i++) out[i] = Math.floor(Math.random() * 256);
  return out;
}

/** A fresh connection id: 12 random hex digits (6 random bytes), picked before each CONNECT. */
export function connId(bytes: (n: number) => Uint8Array = randomBytes): string {
  return [...bytes(6)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/** The payload of a presence publish (or of the will, with `ts` 0), as JSON. */
export function presencePayload(status: PresenceStatus, conn: string, ts: number): string {
  const body: DevicePresence = { status, ts, conn };
  return JSON.stringify(body);
}

/** The last will: offline, ts 0 (the broker sends it whenever the connection dies uncleanly). */
export function willPayload(conn: string): string {
  return presencePayload("offline", conn, 0);
}

/**
 * The heartbeat interval from a login answer's `mqtt.presence_refresh_ms`: null (or absent, from
 * an older server) means no heartbeat — the embedded broker keeps presence itself.
 */
export function heartbeatInterval(refreshMs: number | null | undefined): number | null {
  return typeof refreshMs === "number" && Number.isFinite(refreshMs) && refreshMs > 0 ? refreshMs : null;
}
