/**
 * One table of every error code a client can meet, and what it should do about each.
 *
 * Sources: send acks (docs/protocol.md, "The ack"), the HTTP API (docs/http.md) and the
 * connection itself (CONNACK codes, network). Codes the server adds later and this table does
 * not know yet are reported with action `"fix"` (never retried blindly).
 *
 *   MqchatError ── code, action, status? (HTTP), retryAfterMs?
 */

/** What a client does about an error. */
export type ErrorAction =
  /** Retry the same request (a send keeps its `cmid`) after a backoff. */
  | "retry"
  /** The request is wrong: fix it; retrying it as is cannot help. */
  | "fix"
  /** Drop the request and refresh what the client believes (e.g. the channel list). */
  | "drop"
  /** Update the app: the server speaks a newer protocol. */
  | "upgrade"
  /** Log in again for a fresh token. */
  | "relogin";

export interface ErrorInfo {
  action: ErrorAction;
  description: string;
}

/** Every known code. Keys are the wire's codes. */
export const ERROR_CODES: Readonly<Record<string, ErrorInfo>> = Object.freeze({
  // Send acks (dev/{me}/{device}/ack).
  payload_too_large: { action: "fix", description: "the payload is over 16 KiB" },
  malformed: { action: "fix", description: "not a JSON object, or a field of the wrong type" },
  unknown_field: { action: "fix", description: "a field the protocol version does not define" },
  unsupported_version: { action: "upgrade", description: "`v` is not a version the server speaks" },
  unknown_kind: { action: "fix", description: "the message kind is not defined" },
  body_too_long: { action: "fix", description: "the body is over 4,000 characters" },
  invalid_cmid: { action: "fix", description: "the client message id is not 1-64 of [A-Za-z0-9_.:-]" },
  not_member: { action: "drop", description: "you are not a member of the channel" },
  unavailable: { action: "retry", description: "the store is temporarily unavailable (HTTP 503 too)" },
  // HTTP API.
  invalid_request: { action: "fix", description: "body or query failed validation" },
  unauthorized: { action: "relogin", description: "no bearer token" },
  token_expired: { action: "relogin", description: "the token has expired" },
  token_not_yet_valid: { action: "retry", description: "the token is not valid yet (clock skew)" },
  token_bad_signature: { action: "relogin", description: "the token is badly signed" },
  token_bad_audience: { action: "relogin", description: "the token is for another audience" },
  token_bad_issuer: { action: "relogin", description: "the token is from another issuer" },
  token_bad_claims: { action: "relogin", description: "the token's claims are invalid" },
  token_malformed: { action: "relogin", description: "the token cannot be read" },
  bad_credentials: { action: "fix", description: "unknown username or wrong password" },
  username_taken: { action: "fix", description: "the username is taken" },
  unknown_users: { action: "fix", description: "a member does not exist" },
  channel_not_found: { action: "drop", description: "no such channel, or you are not a member" },
  direct_channel: { action: "fix", description: "a direct channel's members cannot change" },
  forbidden: { action: "fix", description: "not allowed for you" },
  seq_out_of_range: { action: "fix", description: "a read marker beyond the channel's last seq" },
  external_issuer: { action: "fix", description: "login is disabled: tokens come from an identity provider" },
  not_found: { action: "fix", description: "no such route" },
  method_not_allowed: { action: "fix", description: "wrong method for the route" },
  // The connection (see reconnect.ts for the decision table).
  connect_refused: { action: "fix", description: "the broker refused the connection for good" },
  network: { action: "retry", description: "the server could not be reached" },
  not_connected: { action: "retry", description: "the client is not connected" },
  closed: { action: "fix", description: "the client was closed" },
  not_logged_in: { action: "relogin", description: "call login() first" },
});

/** The info for a code; unknown codes are `"fix"`, so they are never retried blindly. */
export function errorInfo(code: string): ErrorInfo {
  return ERROR_CODES[code] ?? { action: "fix", description: "unknown error code" };
}

export class MqchatError extends Error {
  readonly code: string;
  readonly action: ErrorAction;
  /** The HTTP status, for errors from the HTTP API. */
  readonly status: number | undefined;
  /** From `Retry-After`, when the server sent one. */
  readonly retryAfterMs: number | undefined;

  constructor(code: string, message: string, opts: { status?: number; retryAfterMs?: number } = {}) {
    super(`${code}: ${message}`);
    this.name = "MqchatError";
    this.code = code;
    this.action = errorInfo(code).action;
    this.status = opts.status;
    this.retryAfterMs = opts.retryAfterMs;
  }

  /** True when retrying the same request can help. */
  get retryable(): boolean {
    return this.action === "retry";
  }
}
