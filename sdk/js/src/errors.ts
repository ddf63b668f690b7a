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
  empty_body: { action: "fix", description: "a text or edit whose body is empty or only white space" },
  missing_field: { action: "fix", description: "the kind needs a field that is absent (the target of an edit, ...)" },
  field_not_allowed: { action: "fix", description: "the kind does not take a field that is present" },
  invalid_target: { action: "fix", description: "target, reply_to or thread is not a seq (an integer >= 1)" },
  invalid_emoji: { action: "fix", description: "not a short Unicode emoji sequence nor a :shortcode:" },
  target_deleted: { action: "drop", description: "the message changed, quoted or replied under is deleted" },
  too_many_reactions: { action: "drop", description: "the message already carries 20 distinct emoji" },
  invalid_thread: { action: "fix", description: "thread names a reply: reply under its root" },
  timed_out: { action: "drop", description: "a moderator timed you out in this server (retryAfterMs: how long)" },
  slow_mode: { action: "retry", description: "the channel's slow mode: retried with the same cmid after retryAfterMs" },
  not_member: { action: "drop", description: "you are not a member of the channel" },
  unavailable: { action: "retry", description: "the store is temporarily unavailable (HTTP 503 too)" },
  upload_not_found: { action: "drop", description: "no such upload (never made, deleted unused, or its message deleted; also an upload not visible to you): upload the file again" },
  upload_not_yours: { action: "fix", description: "another user's upload, or one made for another channel: upload the file yourself, to this channel" },
  upload_incomplete: { action: "fix", description: "the upload was not completed: PUT the bytes, then complete it, then send" },
  upload_expired: { action: "drop", description: "the upload was not sent within objects.unused_ttl_s: upload the file again" },
  upload_used: { action: "drop", description: "the upload is already in another message (another cmid): one upload, one message" },
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
  token_revoked: { action: "relogin", description: "the device was logged out: log in again" },
  refresh_invalid: { action: "relogin", description: "an unknown, expired or revoked refresh token: log in again" },
  refresh_reused: { action: "relogin", description: "a spent refresh token was presented again: the login is ended" },
  rate_limited: { action: "retry", description: "too many requests: retry after retryAfterMs" },
  ack_timeout: { action: "retry", description: "a REST send got no ack in time: retry with the same cmid" },
  epoch_mismatch: { action: "drop", description: "a read marker for an epoch the channel is not in: sync, then mark again" },
  body_too_large: { action: "fix", description: "the request body is over http.max_body_bytes" },
  bad_request: { action: "fix", description: "a malformed request" },
  bad_credentials: { action: "fix", description: "unknown username or wrong password" },
  username_taken: { action: "fix", description: "the username is taken" },
  unknown_users: { action: "fix", description: "a member does not exist" },
  channel_not_found: { action: "drop", description: "no such channel, or you are not a member" },
  direct_channel: { action: "fix", description: "a direct channel's members cannot change" },
  forbidden: { action: "drop", description: "not allowed for you (a server permission: the message names it)" },
  server_not_found: { action: "drop", description: "no such server, or you are not in it" },
  role_not_found: { action: "fix", description: "no such role in the server" },
  member_not_found: { action: "fix", description: "no such member of the server" },
  invite_not_found: { action: "fix", description: "no such invite" },
  user_not_found: { action: "fix", description: "no such user" },
  role_hierarchy: { action: "fix", description: "the role or member is at or above your highest role, or is the owner" },
  banned: { action: "drop", description: "you are banned from the server" },
  owner_cannot_leave: { action: "fix", description: "the owner must transfer the server first" },
  server_channel: { action: "fix", description: "server channels' members come by invite" },
  invite_revoked: { action: "drop", description: "the invite was revoked" },
  invite_expired: { action: "drop", description: "the invite has expired" },
  invite_used_up: { action: "drop", description: "the invite has no uses left" },
  unknown_permission: { action: "fix", description: "a permission name that does not exist" },
  invalid: { action: "fix", description: "a request the directory refuses as malformed" },
  not_server_channel: { action: "fix", description: "a server-channel operation on a direct or group channel" },
  conflict: { action: "fix", description: "a uniqueness rule was violated" },
  empty_query: { action: "fix", description: "a search without terms" },
  query_too_long: { action: "fix", description: "the search query is too long" },
  too_many_terms: { action: "fix", description: "the search query has too many terms" },
  unknown_filter: { action: "fix", description: "a search filter that does not exist" },
  invalid_filter: { action: "fix", description: "a search filter's value is invalid, or given twice" },
  invalid_limit: { action: "fix", description: "a page size out of range" },
  invalid_cursor: { action: "fix", description: "a cursor from another listing, or one that does not decode" },
  cursor_mismatch: { action: "fix", description: "a search cursor used with another query or filters" },
  search_disabled: { action: "fix", description: "search is turned off on this server" },
  seq_out_of_range: { action: "fix", description: "a read marker beyond the channel's last seq" },
  external_issuer: { action: "fix", description: "login is disabled: tokens come from an identity provider" },
  not_found: { action: "drop", description: "no such message in the channel's epoch (sync), or no such route" },
  method_not_allowed: { action: "fix", description: "wrong method for the route" },
  // Uploads (docs/attachments.md).
  upload_too_large: { action: "fix", description: "the file is over objects.max_upload_bytes, or the body is over what the upload URL allows" },
  forbidden_type: { action: "fix", description: "a content type the server does not accept (objects.allowed_types)" },
  invalid_size: { action: "fix", description: "the declared size is not positive" },
  invalid_filename: { action: "fix", description: "nothing usable left of the file name, or it is too long" },
  size_mismatch: { action: "fix", description: "the stored bytes are not as many as declared (they were deleted)" },
  type_mismatch: { action: "fix", description: "the stored bytes are not of the declared type (they were deleted)" },
  url_invalid: { action: "fix", description: "a signed URL that was changed or is for another operation" },
  url_expired: { action: "drop", description: "a signed URL past its expiry: ask for a fresh one" },
  object_not_found: { action: "drop", description: "the file was deleted since the URL was made" },
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
