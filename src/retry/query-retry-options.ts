import { describe } from '../context/validate.js'
import { InvalidOptionError } from '../errors/invalid-option-error.js'
import type { RetrySettings } from './retry-options.js'

/**
 * How one piece of work retries, on a query context (`withQueryContext({
 * retry })`) or a domain's policy (`policies.x.retry`); `false` gives it one
 * attempt and no retry of any kind. The pool's `retry` options still set the
 * backoff, the budget and the check at checkout.
 *
 * **What a read is.** Only the caller knows that a statement changes nothing
 * (SQL text does not say it: `select nextval(...)`, a function with side
 * effects, a `with ... insert` all read as selects), so `reads: true` is the
 * caller's word for every statement of the work that runs outside a
 * transaction. Statements inside a transaction are never retried alone
 * (`retryTransaction` re-runs the whole transaction), and a statement Kysely
 * built as an insert, update, delete or merge is never taken for a read,
 * whatever the caller said.
 *
 * @example
 * ```ts
 * await withQueryContext({ timeoutMs: 800, retry: { reads: true } }, () => db.selectFrom('product').selectAll().execute())
 * new GovernedPostgresDialect({ pool, policies: { report: { timeoutMs: 60_000, retry: { reads: true, maxAttempts: 2 } } } })
 * ```
 */
export interface QueryRetryOptions {
  /** Attempts per query of this work, the first included: replaces the pool's `retry.maxAttempts`. */
  readonly maxAttempts?: number | undefined
  /**
   * The caller's word that the work's statements outside a transaction are
   * reads: one whose connection broke or was shut down after it was sent
   * (08xxx, 57P01, 57P02) runs again on another connection, within the
   * deadline and the pool's retry budget. Default false.
   */
  readonly reads?: boolean | undefined
}

/**
 * A context's or a policy's `retry`, validated and frozen.
 *
 * @example
 * ```ts
 * const retry: QueryRetry = false // one attempt, no retry
 * ```
 */
export type QueryRetry = Readonly<QueryRetryOptions> | false

/**
 * What applies to one query once the context, its domain's policy and the
 * pool's options are combined.
 *
 * @example
 * ```ts
 * const scope: RetryScope = { maxAttempts: 3, reads: false }
 * ```
 */
export interface RetryScope {
  readonly maxAttempts: number
  readonly reads: boolean
}

/**
 * Validates a context's or a policy's `retry` (`option` names it in the
 * error); `undefined` stays undefined (inherited).
 *
 * @example
 * ```ts
 * resolveQueryRetry({ reads: true }, 'policies.report.retry') // { reads: true }
 * resolveQueryRetry({ maxAttempts: 0 }, 'retry') // throws InvalidOptionError
 * ```
 */
export function resolveQueryRetry(value: unknown, option: string): QueryRetry | undefined {
  if (value === undefined || value === false) return value
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new InvalidOptionError(option, `must be an object or false; got ${describe(value)}`)
  const { maxAttempts, reads, ...rest } = value as QueryRetryOptions
  const unknown = Object.keys(rest)
  if (unknown.length > 0) throw new InvalidOptionError(option, `has no option ${unknown.join(', ')} (it takes maxAttempts and reads)`)
  if (maxAttempts !== undefined && (!Number.isInteger(maxAttempts) || maxAttempts < 1)) {
    throw new InvalidOptionError(`${option}.maxAttempts`, `must be a whole number >= 1; got ${describe(maxAttempts)}`)
  }
  if (reads !== undefined && typeof reads !== 'boolean') throw new InvalidOptionError(`${option}.reads`, `must be a boolean; got ${describe(reads)}`)
  return Object.freeze({ maxAttempts, reads })
}

/**
 * The nearer level wins, field by field: the context over its domain's
 * policy over the pool. `false` at a level means one attempt and no reads
 * there (a nearer level can still ask for more).
 *
 * @example
 * ```ts
 * retryScopeOf(context?.retry, policy.retry, settings) // { maxAttempts: 3, reads: true }
 * ```
 */
export function retryScopeOf(context: QueryRetry | undefined, policy: QueryRetry | undefined, pool: RetrySettings): RetryScope {
  if (context === undefined && policy === undefined) return { maxAttempts: pool.maxAttempts, reads: false }
  const near = context === false ? OFF : context
  const far = policy === false ? OFF : policy
  return { maxAttempts: near?.maxAttempts ?? far?.maxAttempts ?? pool.maxAttempts, reads: near?.reads ?? far?.reads ?? false }
}

/**
 * A context's `retry` over the one it inherits: its own fields win.
 *
 * @example
 * ```ts
 * nestedQueryRetry({ reads: true }, { maxAttempts: 2 }) // { maxAttempts: 2, reads: true }
 * ```
 */
export function nestedQueryRetry(parent: QueryRetry | undefined, own: QueryRetry | undefined): QueryRetry | undefined {
  if (own === undefined) return parent
  if (own === false || parent === undefined) return own
  const base = parent === false ? OFF : parent
  return Object.freeze({ maxAttempts: own.maxAttempts ?? base.maxAttempts, reads: own.reads ?? base.reads })
}

const OFF: QueryRetryOptions = Object.freeze({ maxAttempts: 1, reads: false })
