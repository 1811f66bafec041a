import { InvalidOptionError } from '../errors/invalid-option-error.js'
import type { BackoffSettings } from './backoff.js'
import { resolveRetryBudget, type RetryBudgetOptions, type RetryBudgetSettings } from './retry-budget.js'

/**
 * How a pool retries work that never reached the server (a failed connect,
 * 57P03 during a restart). On by default; `retry: false` turns it off.
 *
 * @example
 * ```ts
 * new GovernedPostgresDialect({
 *   pool,
 *   retry: { maxAttempts: 4, backoff: { baseMs: 20, maxMs: 500 }, budget: { maxTokens: 10, tokenRatio: 0.1 }, waitForRecovery: true },
 * })
 * ```
 */
export interface RetryOptions {
  /** Attempts per query, the first included. Default 3. */
  readonly maxAttempts?: number | undefined
  /** Exponential backoff with full jitter: base and cap of the delay, ms. Default 25 and 1000. */
  readonly backoff?: { readonly baseMs?: number | undefined; readonly maxMs?: number | undefined } | undefined
  /** The pool's retry budget (a token bucket). */
  readonly budget?: RetryBudgetOptions | undefined
  /**
   * While the circuit breaker is not closed, a query whose deadline the next
   * probe can beat always waits for that probe's outcome (the admission
   * gate's rule). With this option it also waits for the probes after a
   * failed one, while its deadline lasts (never without a deadline), and a
   * query whose connect failed and opened the breaker goes back to wait
   * instead of getting its connect error. The wait sends nothing to the
   * server: the probe is the only attempt. Off by default: it holds callers
   * for the length of an outage rather than telling them `retryAfterMs`.
   */
  readonly waitForRecovery?: boolean | undefined
  /**
   * A session that sat idle in pg-pool at least this long is checked at
   * checkout (an empty query, one round trip) before the caller's statement
   * goes: a backend killed or a connection cut while idle is then found dead
   * before anything of the caller's was sent, and the query goes to another
   * connection (reason `dead_at_checkout`). Default 1000 ms (pgxpool pings
   * after 1 s idle, HikariCP after 500 ms); `Infinity` turns the check off.
   */
  readonly checkIdleAfterMs?: number | undefined
}

/**
 * The retry options, validated and frozen.
 *
 * @example
 * ```ts
 * const settings: RetrySettings = resolveRetryOptions({ maxAttempts: 2 })
 * ```
 */
export interface RetrySettings {
  readonly maxAttempts: number
  readonly backoff: BackoffSettings
  readonly budget: RetryBudgetSettings
  readonly waitForRecovery: boolean
  readonly checkIdleAfterMs: number
}

/**
 * Validates and completes `retry`; `false` gives one attempt and no waiting.
 *
 * @example
 * ```ts
 * resolveRetryOptions(false).maxAttempts // 1
 * ```
 */
export function resolveRetryOptions(options: RetryOptions | false | undefined): RetrySettings {
  if (options === false) return Object.freeze({ maxAttempts: 1, backoff: Object.freeze({ baseMs: 25, maxMs: 1_000 }), budget: resolveRetryBudget({ maxTokens: 0 }), waitForRecovery: false, checkIdleAfterMs: Infinity })
  if (options !== undefined && (typeof options !== 'object' || options === null)) throw new InvalidOptionError('retry', 'must be an object or false')
  const { maxAttempts = 3, backoff = {}, budget, waitForRecovery = false, checkIdleAfterMs = 1_000 } = options ?? {}
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) throw new InvalidOptionError('retry.maxAttempts', `must be a whole number >= 1; got ${String(maxAttempts)}`)
  const { baseMs = 25, maxMs = 1_000 } = backoff
  if (!Number.isFinite(baseMs) || baseMs < 0) throw new InvalidOptionError('retry.backoff.baseMs', `must be a number of milliseconds >= 0; got ${String(baseMs)}`)
  if (!Number.isFinite(maxMs) || maxMs < baseMs) throw new InvalidOptionError('retry.backoff.maxMs', `must be a number of milliseconds >= baseMs; got ${String(maxMs)}`)
  if (typeof waitForRecovery !== 'boolean') throw new InvalidOptionError('retry.waitForRecovery', `must be a boolean; got ${String(waitForRecovery)}`)
  if (typeof checkIdleAfterMs !== 'number' || Number.isNaN(checkIdleAfterMs) || checkIdleAfterMs < 0) {
    throw new InvalidOptionError('retry.checkIdleAfterMs', `must be a number of milliseconds >= 0 (Infinity: no check); got ${String(checkIdleAfterMs)}`)
  }
  return Object.freeze({ maxAttempts, backoff: Object.freeze({ baseMs, maxMs }), budget: resolveRetryBudget(budget), waitForRecovery, checkIdleAfterMs })
}
