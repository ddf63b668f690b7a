/**
 * What a client does after a failed or lost connection: the reconnect decision table of
 * docs/simulator.md ("Reconnecting"), the same one `mobile_sim/reconnect.py` implements.
 *
 * | failure            | cause                                  | decision                                   |
 * |--------------------|----------------------------------------|--------------------------------------------|
 * | CONNACK 0x01       | unacceptable protocol version          | stop                                       |
 * | CONNACK 0x02       | client identifier rejected             | stop                                       |
 * | CONNACK 0x03       | server unavailable                     | retry (backoff)                            |
 * | CONNACK 0x04       | bad user name or password              | re-login if the token has expired, else stop |
 * | CONNACK 0x05       | not authorized                         | re-login if the token has expired, else stop |
 * | connection refused | nothing listening (broker restarting)  | retry (backoff)                            |
 * | connection lost    | dropped while connecting or later      | retry (backoff)                            |
 * | timeout            | no CONNACK, or the connect timed out   | retry (backoff)                            |
 *
 * A re-login that is refused again stops. Pure: `decide` does no I/O and reads no clock.
 */

import { type BackoffPolicy, DEFAULT_BACKOFF, backoffDelay } from "./backoff.js";

export type Failure =
  | "protocol"
  | "identifier_rejected"
  | "server_unavailable"
  | "bad_credentials"
  | "not_authorized"
  | "connection_refused"
  | "connection_lost"
  | "timeout";

/** CONNACK return codes of MQTT 3.1.1 (section 3.2.2.3). */
export const CONNACK: Readonly<Record<number, Failure>> = Object.freeze({
  1: "protocol",
  2: "identifier_rejected",
  3: "server_unavailable",
  4: "bad_credentials",
  5: "not_authorized",
});

/** Retrying cannot help: the client or its identity is wrong. */
export const TERMINAL: ReadonlySet<Failure> = new Set<Failure>(["protocol", "identifier_rejected"]);
/** Retrying with the same token cannot help; a fresh token can, if the old one expired. */
export const CREDENTIALS: ReadonlySet<Failure> = new Set<Failure>(["bad_credentials", "not_authorized"]);
/** The server or the network is (briefly) unavailable. */
export const RETRYABLE: ReadonlySet<Failure> = new Set<Failure>([
  "server_unavailable", "connection_refused", "connection_lost", "timeout",
]);

export type Decision =
  | { action: "retry"; delayMs: number }
  | { action: "stop"; failure: Failure; reason: string }
  | { action: "relogin" };

export interface DecideInput {
  /** Failed attempts in a row before this one (0 for the first failure). */
  attempt: number;
  /** The token has expired (or is about to, within a minute) by the device's clock. */
  tokenExpired: boolean;
  /** A fresh token was already fetched since the last successful connection. */
  relogged: boolean;
  /** Uniform in [0, 1), for the jitter. */
  rand: number;
  backoff?: BackoffPolicy;
}

export function decide(failure: Failure, input: DecideInput): Decision {
  const backoff = input.backoff ?? DEFAULT_BACKOFF;
  if (TERMINAL.has(failure)) return { action: "stop", failure, reason: `${failure}: retrying cannot help` };
  if (CREDENTIALS.has(failure)) {
    if (input.tokenExpired && !input.relogged) return { action: "relogin" };
    return { action: "stop", failure, reason: `${failure} with a token that has not expired (or was just renewed)` };
  }
  if (backoff.maxAttempts && input.attempt + 1 >= backoff.maxAttempts) {
    return { action: "stop", failure, reason: `${failure}: gave up after ${input.attempt + 1} attempts` };
  }
  return { action: "retry", delayMs: backoffDelay(input.attempt, input.rand, backoff) };
}

/**
 * The failure for an error from MQTT.js or the network. A CONNACK refusal carries its return code
 * in `code` (a number); Node network errors carry an errno string; browsers tell nothing more than
 * "the socket closed", which is `connection_lost` (retryable, as a refused connection would be).
 */
export function classify(err: unknown): Failure {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  if (typeof code === "number") return CONNACK[code] ?? "protocol";
  if (code === "ECONNREFUSED") return "connection_refused";
  if (code === "ETIMEDOUT" || code === "timeout") return "timeout";
  return "connection_lost";
}

/** The token counts as expired a minute before `exp`, so a reconnect does not race the expiry. */
export const TOKEN_EXPIRY_MARGIN_MS = 60_000;

export function tokenExpired(expiresAtS: number, nowMs: number): boolean {
  return nowMs >= expiresAtS * 1000 - TOKEN_EXPIRY_MARGIN_MS;
}
