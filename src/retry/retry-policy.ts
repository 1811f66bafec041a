import { isCapacityRefusal } from '../admission/capacity-ceiling.js'
import { isConnectionFailure } from '../admission/circuit-breaker.js'
import { GovernorError } from '../errors/governor-error.js'

/**
 * Why a failed piece of work could be tried again.
 *
 * @example
 * ```ts
 * const reasons: RetryReason[] = ['connect_failed', 'serialization_failure']
 * ```
 */
export type RetryReason =
  | 'connect_failed'
  | 'cannot_connect_now'
  | 'dead_at_checkout'
  | 'connection_lost'
  | 'admin_shutdown'
  | 'serialization_failure'
  | 'deadlock_detected'

/**
 * `always`: the work never reached the server, so running it again cannot run
 * it twice. `opt_in`: it may have run; only the caller knows that running it
 * again is harmless (a read, or a whole transaction re-run from its start).
 * `never`: running it again is wrong or useless.
 *
 * @example
 * ```ts
 * const safety: RetrySafety = classifyFailure(error, { stage: 'connect' }).safety
 * ```
 */
export type RetrySafety = 'always' | 'opt_in' | 'never'

/**
 * Where the work was when it failed. `connect`: opening a session (nothing
 * sent). `checkout`: a lent session found dead before a statement was
 * written to it. `statement`: after the statement was sent (its outcome may
 * be unknown). `transaction`: a whole transaction, judged by its error.
 *
 * @example
 * ```ts
 * const site: FailureSite = { stage: 'statement', readOnly: true, inTransaction: false }
 * ```
 */
export interface FailureSite {
  readonly stage: 'connect' | 'checkout' | 'statement' | 'transaction'
  /** The statement only reads (the caller says so). */
  readonly readOnly?: boolean | undefined
  /** The statement ran inside an explicit transaction (a retry of it alone would lose the transaction's work). */
  readonly inTransaction?: boolean | undefined
}

/**
 * A failure judged by the retry rules; `reason` is undefined when it is never retried.
 *
 * @example
 * ```ts
 * const verdict: RetryVerdict = { safety: 'always', reason: 'connect_failed' }
 * ```
 */
export interface RetryVerdict {
  readonly safety: RetrySafety
  readonly reason: RetryReason | undefined
}

const NEVER: RetryVerdict = Object.freeze({ safety: 'never', reason: undefined })

function verdict(safety: RetrySafety, reason: RetryReason): RetryVerdict {
  return { safety, reason }
}

/**
 * The retry rules, in one pure function (issue 13):
 * - never: our own refusals and stops (`LOAD_SHED`: the caller gets
 *   `retryAfterMs`; `DEADLINE_EXCEEDED`; `QUERY_CANCELED`, which is our own
 *   57014), a refusal for capacity (53300: the capacity ceiling waits for a
 *   held connection instead, DESIGN invariant 9), bad credentials (28xxx:
 *   another attempt fails the same way), a write or an in-transaction
 *   statement whose connection broke after it was sent (its outcome is
 *   unknown), and any other SQL error;
 * - always: a failed connect (57P03 cannot_connect_now during a restart, or
 *   the server unreachable), and a session whose check at checkout failed,
 *   whatever the error (the check is ours; the caller's work was not sent);
 * - opt in: a read outside a transaction whose connection broke or was shut
 *   down after it was sent (08xxx, 57P01, 57P02), and a whole transaction
 *   that lost to a serialization failure (40001) or a deadlock (40P01).
 *
 * @example
 * ```ts
 * classifyFailure(Object.assign(new Error('the database system is starting up'), { code: '57P03' }), { stage: 'connect' })
 * // { safety: 'always', reason: 'cannot_connect_now' }
 * ```
 */
export function classifyFailure(error: unknown, site: FailureSite): RetryVerdict {
  if (error instanceof GovernorError || isCapacityRefusal(error)) return NEVER
  const code = (error as { code?: unknown } | null)?.code
  if (code === '28000' || code === '28P01') return NEVER
  switch (site.stage) {
    case 'connect':
      if (code === '57P03') return verdict('always', 'cannot_connect_now')
      return isConnectionFailure(error) ? verdict('always', 'connect_failed') : NEVER
    case 'checkout':
      // The check at checkout is our own statement: whatever it met (a dead socket, a stray cancel), nothing of the caller's was sent.
      return verdict('always', 'dead_at_checkout')
    case 'transaction':
      if (code === '40001') return verdict('opt_in', 'serialization_failure')
      if (code === '40P01') return verdict('opt_in', 'deadlock_detected')
      return NEVER
    case 'statement': {
      // Sent, and the connection is gone: the statement may have run. Only a read on its own may go again.
      if (site.readOnly !== true || site.inTransaction === true || !isConnectionFailure(error)) return NEVER
      return code === '57P01' || code === '57P02' ? verdict('opt_in', 'admin_shutdown') : verdict('opt_in', 'connection_lost')
    }
  }
}
