/**
 * Exponential backoff with full jitter (AWS's "full jitter"): a delay drawn
 * uniformly from `[0, min(maxMs, baseMs × 2^(retry-1))]`. Full rather than
 * equal jitter because callers that failed together (a restart) must not
 * come back together; the mean is half the cap, which is the point.
 *
 * @example
 * ```ts
 * const delayMs = fullJitterDelayMs(2, { baseMs: 25, maxMs: 1_000 }) // in [0, 50]
 * ```
 */
export function fullJitterDelayMs(retry: number, backoff: BackoffSettings, random: () => number = Math.random): number {
  const exponent = Math.min(Math.max(retry - 1, 0), 30)
  return random() * Math.min(backoff.maxMs, backoff.baseMs * 2 ** exponent)
}

/**
 * The backoff's base and cap, validated.
 *
 * @example
 * ```ts
 * const backoff: BackoffSettings = { baseMs: 25, maxMs: 1_000 }
 * ```
 */
export interface BackoffSettings {
  readonly baseMs: number
  readonly maxMs: number
}
