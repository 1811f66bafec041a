import { fullJitterDelayMs } from './backoff.js'
import type { RetryVerdict } from './retry-policy.js'
import type { RetrySettings } from './retry-options.js'

/**
 * Whether to try again, and after how long; or why not.
 *
 * @example
 * ```ts
 * const decision: RetryDecision = { retry: false, why: 'budget' }
 * ```
 */
export type RetryDecision =
  | { readonly retry: true; readonly delayMs: number }
  | { readonly retry: false; readonly why: 'unsafe' | 'attempts' | 'budget' | 'deadline' | 'circuit_open' }

/**
 * What {@link planRetry} decides from: the failure's verdict and the state of the caller and the pool.
 *
 * @example
 * ```ts
 * const input: RetryInput = { verdict, optedIn: false, attempts: 1, now: 0, deadline: 500, budgetAllows: true }
 * ```
 */
export interface RetryInput {
  readonly verdict: RetryVerdict
  /** The caller said that work which may have run can run again. */
  readonly optedIn: boolean
  /** Attempts made so far (1 after the first failed). */
  readonly attempts: number
  /** Monotonic ms now, and the caller's deadline on the same clock (Infinity: none). */
  readonly now: number
  readonly deadline: number
  /** The pool's budget, after this failure took its token. */
  readonly budgetAllows: boolean
}

/**
 * The retry decision, as a pure function: unsafe work is never retried;
 * then the attempt count, the pool's budget (empty: fail fast) and the
 * deadline, which covers every attempt: a retry whose backoff would end at
 * or after the deadline is not made (the caller gets the last error now
 * rather than a deadline error later). The first retry of a session found
 * dead at checkout goes at once, to another connection; the others back off
 * with full jitter.
 *
 * @example
 * ```ts
 * const decision = planRetry({ verdict, optedIn: false, attempts, now: now(), deadline, budgetAllows: budget.failed() }, settings)
 * if (decision.retry) await sleep(decision.delayMs)
 * ```
 */
export function planRetry(input: RetryInput, settings: RetrySettings, random: () => number = Math.random): RetryDecision {
  const { verdict } = input
  if (verdict.safety === 'never' || (verdict.safety === 'opt_in' && !input.optedIn)) return { retry: false, why: 'unsafe' }
  if (input.attempts >= settings.maxAttempts) return { retry: false, why: 'attempts' }
  if (!input.budgetAllows) return { retry: false, why: 'budget' }
  const delayMs = verdict.reason === 'dead_at_checkout' && input.attempts === 1 ? 0 : fullJitterDelayMs(input.attempts, settings.backoff, random)
  if (input.now + delayMs >= input.deadline) return { retry: false, why: 'deadline' }
  return { retry: true, delayMs }
}
