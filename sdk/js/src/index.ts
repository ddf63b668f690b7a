/**
 * mqchat client SDK: see docs/sdk.md.
 *
 * The policy is pure and exported for reuse and tests: `decide` / `classify` (the reconnect
 * table), `backoffDelay` (full jitter), `dueEntries` (the outbox), `classifyIncoming` (gaps and
 * epochs), `fold` / `applyEvent` (message state, as `mqchat/fold.py`), `refreshDelay` (tokens),
 * `presencePayload` / `willPayload` / `connId` (presence). `MqchatClient` is the I/O around them.
 */

export { MqchatClient } from "./client.js";
export { refreshDelay } from "./client.js";
export type {
  ClientEvents, ClientOptions, ConnectionState, FileOptions, FileSendOptions, ResetEvent, SendOptions, StateEvent, UnreadEvent, UpdateEvent,
} from "./client.js";
export { ChannelFold, MAX_REACTION_EMOJI, applyEvent, fold, stateOut } from "./fold.js";
export type { FoldEvent, FoldedStates, MessageState, MessageView } from "./fold.js";
export { DEFAULT_BACKOFF, backoffBound, backoffDelay } from "./backoff.js";
export type { BackoffPolicy } from "./backoff.js";
export { CONNACK, CREDENTIALS, RETRYABLE, TERMINAL, classify, decide, tokenExpired } from "./reconnect.js";
export type { Decision, DecideInput, Failure } from "./reconnect.js";
export { ERROR_CODES, MqchatError, errorInfo } from "./errors.js";
export type { ErrorAction, ErrorInfo } from "./errors.js";
export { Outbox, dueEntries } from "./outbox.js";
export type { OutboxEntry } from "./outbox.js";
export { ChannelTracker, classifyIncoming } from "./sequence.js";
export type { Cursor, Verdict } from "./sequence.js";
export { connId, heartbeatInterval, presencePayload, willPayload } from "./presence.js";
export type { DevicePresence } from "./presence.js";
export { MemoryStorage } from "./storage.js";
export type { KeyValueStorage } from "./storage.js";
export { HttpApi, byteLength } from "./http.js";
export type { Fetch, FileData, HistoryQuery, PageQuery, SearchOptions } from "./http.js";
export { checkId, parseTopic, topics } from "./topics.js";
export * from "./types.js";
