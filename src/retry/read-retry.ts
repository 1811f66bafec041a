import { now } from '../context/monotonic-clock.js'
import { currentQueryContext, withQueryContext } from '../context/query-context.js'
import type { Governor } from '../governor/governor.js'
import type { Lease } from '../governor/lease.js'
import { markAttempts } from './retry-attempts.js'

/**
 * A statement failed on `failed` once sent: runs it again on another
 * connection while {@link ConnectRetries.afterStatementFailure} allows (a
 * read, on the caller's word, outside a transaction, whose connection broke;
 * within the deadline and the pool's budget), handing each new lease to
 * `adopt` (the caller's connection now holds it). Every attempt runs under
 * one deadline: the context's, or the policy's timeout counted from the first
 * failure. Throws the last error, with `attempts` on it.
 *
 * @example
 * ```ts
 * try {
 *   return await lease.session.execute(sql, parameters)
 * } catch (error) {
 *   return rerunRead(error, lease, governor, isWrite, (next) => (lease = next), (next) => next.session.execute(sql, parameters))
 * }
 * ```
 */
export async function rerunRead<R>(
  error: unknown,
  failed: Lease,
  governor: Governor,
  write: boolean,
  adopt: (lease: Lease) => void,
  run: (lease: Lease) => Promise<R>,
): Promise<R> {
  const retries = governor.retries
  // The common case, a failure without the caller's word: nothing to decide.
  if (!retries.scopeOf(currentQueryContext()).reads) throw error
  const ticket = retries.ticketNow()
  const { deadline } = ticket
  let lease = failed
  for (let attempts = 1; ; attempts++) {
    // pg's transaction status is the one of the last ReadyForQuery: before this statement, since none came after it.
    const inTransaction = lease.session.client.getTransactionStatus() !== 'I'
    await retries.afterStatementFailure(error, ticket, attempts, { inTransaction, write })
    lease.session.discard('its connection broke under a read that runs again elsewhere')
    lease.release()
    const within = <T>(fn: () => Promise<T>): Promise<T> => (deadline < Infinity ? withQueryContext({ timeoutMs: Math.max(0, deadline - now()) }, fn) : fn())
    try {
      lease = await within(() => governor.acquire())
    } catch (acquireError) {
      throw markAttempts(acquireError, attempts + 1)
    }
    adopt(lease)
    try {
      return await within(() => run(lease))
    } catch (next) {
      error = next
    }
  }
}
