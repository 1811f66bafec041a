import { InvalidOptionError } from '../errors/invalid-option-error.js'

/**
 * The retry budget of one pool: gRPC's retry throttling (gRFC A6), a token
 * bucket. It starts full at `maxTokens`; every retryable failure takes one
 * token, every success gives back `tokenRatio`; retries are allowed only
 * while more than half the tokens are left.
 *
 * Chosen over Finagle's ratio budget (retries ≤ a percentage of requests
 * plus a floor per second) because it answers to failures rather than to
 * traffic: when the server is down, retries stop after `maxTokens / 2`
 * failures however many requests arrive, whereas a ratio keeps sending a
 * fixed share of a growing offered load into a dead server. Over any stretch,
 * retries ≤ `maxTokens / 2 + tokenRatio × successes`: a bounded fraction
 * above the traffic that succeeds, never a multiple. It needs no clock and no
 * window: one number, O(1) per call.
 *
 * @example
 * ```ts
 * const budget = new RetryBudget({ maxTokens: 10, tokenRatio: 0.1 })
 * if (budget.failed()) scheduleRetry()
 * ```
 */
export class RetryBudget {
  readonly #maxTokens: number
  readonly #tokenRatio: number
  #tokens: number

  constructor(settings: RetryBudgetSettings) {
    this.#maxTokens = settings.maxTokens
    this.#tokenRatio = settings.tokenRatio
    this.#tokens = settings.maxTokens
  }

  /** Tokens left, in [0, maxTokens]. */
  get tokens(): number {
    return this.#tokens
  }

  /** Whether a retry may be made now (more than half the tokens left), without taking anything. */
  get allowsRetry(): boolean {
    return this.#tokens > this.#maxTokens / 2
  }

  /** A retryable failure: takes a token; returns whether a retry may follow it. */
  failed(): boolean {
    this.#tokens = Math.max(0, this.#tokens - 1)
    return this.allowsRetry
  }

  /** A success: gives back `tokenRatio` of a token. */
  succeeded(): void {
    if (this.#tokens < this.#maxTokens) this.#tokens = Math.min(this.#maxTokens, this.#tokens + this.#tokenRatio)
  }
}

/**
 * Options of the retry budget (a token bucket, see {@link RetryBudget}).
 *
 * @example
 * ```ts
 * const budget: RetryBudgetOptions = { maxTokens: 20, tokenRatio: 0.05 }
 * ```
 */
export interface RetryBudgetOptions {
  /** Size of the bucket; retries stop below half of it. Default 10 (at most 5 retries in a row without a success). */
  readonly maxTokens?: number | undefined
  /** Token given back per success: the share of successful traffic that may be retried. Default 0.1. */
  readonly tokenRatio?: number | undefined
}

/**
 * The budget's settings, validated.
 *
 * @example
 * ```ts
 * const settings: RetryBudgetSettings = resolveRetryBudget({ maxTokens: 20 })
 * ```
 */
export interface RetryBudgetSettings {
  readonly maxTokens: number
  readonly tokenRatio: number
}

/**
 * Validates and completes the budget's options.
 *
 * @example
 * ```ts
 * resolveRetryBudget({ tokenRatio: 0.2 }) // { maxTokens: 10, tokenRatio: 0.2 }
 * ```
 */
export function resolveRetryBudget(options: RetryBudgetOptions = {}, option = 'retry.budget'): RetryBudgetSettings {
  const { maxTokens = 10, tokenRatio = 0.1 } = options
  if (!Number.isFinite(maxTokens) || maxTokens < 0) throw new InvalidOptionError(`${option}.maxTokens`, `must be a number >= 0 (0 turns retries off); got ${String(maxTokens)}`)
  if (!Number.isFinite(tokenRatio) || tokenRatio <= 0 || tokenRatio > 1) {
    throw new InvalidOptionError(`${option}.tokenRatio`, `must be a number in (0, 1]; got ${String(tokenRatio)}`)
  }
  return Object.freeze({ maxTokens, tokenRatio })
}
