import { InvalidOptionError } from '../errors/invalid-option-error.js'
import { MAX_TIMEOUT_MS } from '../context/validate.js'

/**
 * The default ladder of statement_timeout values, in milliseconds. A statement
 * runs with the smallest step at or above its remaining budget, so the server
 * stops it at most one step after the deadline even if the client is gone.
 *
 * @example
 * ```ts
 * new GovernedPostgresDialect({ pool, statementTimeoutLadderMs: [...DEFAULT_STATEMENT_TIMEOUT_LADDER_MS, 7_200_000] })
 * ```
 */
export const DEFAULT_STATEMENT_TIMEOUT_LADDER_MS: readonly number[] = Object.freeze([
  100, 250, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000,
])

/**
 * Maps a remaining budget to a statement_timeout step. Steps are few, so a
 * connection's cached value rarely changes and steady traffic sends no SET.
 *
 * @example
 * ```ts
 * const ladder = new StatementTimeoutLadder([100, 1000, 10_000])
 * ladder.bucketFor(420) // 1000
 * ```
 */
export class StatementTimeoutLadder {
  readonly steps: readonly number[]

  constructor(steps: readonly number[] = DEFAULT_STATEMENT_TIMEOUT_LADDER_MS) {
    if (!Array.isArray(steps) || steps.length === 0) {
      throw new InvalidOptionError('statementTimeoutLadderMs', 'must be a non-empty array of milliseconds')
    }
    steps.forEach((step, index) => {
      if (!Number.isInteger(step) || step < 1 || step > MAX_TIMEOUT_MS) {
        throw new InvalidOptionError(`statementTimeoutLadderMs[${index}]`, `must be an integer from 1 to ${MAX_TIMEOUT_MS}; got ${String(step)}`)
      }
      if (index > 0 && step <= (steps[index - 1] as number)) {
        throw new InvalidOptionError(`statementTimeoutLadderMs[${index}]`, 'steps must be strictly increasing')
      }
    })
    this.steps = Object.freeze([...steps])
  }

  /**
   * The step for a remaining budget. Past the last step, the budget is rounded
   * up to a whole multiple of the last step (capped at the largest timer).
   */
  bucketFor(remainingMs: number): number {
    const steps = this.steps
    for (let i = 0; i < steps.length; i++) {
      const step = steps[i] as number
      if (remainingMs <= step) return step
    }
    const last = steps[steps.length - 1] as number
    return Math.min(MAX_TIMEOUT_MS, Math.ceil(remainingMs / last) * last)
  }
}
