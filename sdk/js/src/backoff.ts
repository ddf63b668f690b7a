/**
 * Capped exponential backoff with full jitter: the delay before retry number `attempt` (0-based) is
 * uniform in `[0, min(capMs, baseMs * 2**attempt))`, so a crowd of devices that lost the same
 * server spreads its reconnections over the whole window instead of coming back in lockstep.
 *
 * Pure: the random number is an argument.
 */

export interface BackoffPolicy {
  /** The bound of the first retry's delay. Default 500 ms. */
  baseMs: number;
  /** No delay is ever longer than this. Default 30 s. */
  capMs: number;
  /** Stop after this many failed attempts in a row; 0 never gives up. Default 0. */
  maxAttempts: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffPolicy> = Object.freeze({ baseMs: 500, capMs: 30_000, maxAttempts: 0 });

/** The upper end of the delay before retry number `attempt`. */
export function backoffBound(attempt: number, policy: BackoffPolicy = DEFAULT_BACKOFF): number {
  // 2 ** attempt overflows past ~1024 attempts; the cap is reached long before.
  return Math.min(policy.capMs, policy.baseMs * 2 ** Math.min(Math.max(attempt, 0), 64));
}

/** Full jitter: `rand` (uniform in [0, 1)) scaled to `[0, backoffBound(attempt))`. */
export function backoffDelay(attempt: number, rand: number, policy: BackoffPolicy = DEFAULT_BACKOFF): number {
  return Math.min(Math.max(rand, 0), 1) * backoffBound(attempt, policy);
}
