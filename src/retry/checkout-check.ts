import { BudgetRace } from '../context/budget-race.js'
import { now } from '../context/monotonic-clock.js'
import { errorForStop } from '../errors/stop-error.js'
import type { GovernedSession } from '../session/governed-session.js'
import type { RetryTicket } from './connect-retries.js'

/**
 * The check of a session at checkout, when it sat idle in pg-pool for at
 * least `afterMs`: an empty query, one round trip, before the caller's
 * statement goes. A backend killed while its connection was idle (a restart,
 * `pg_terminate_backend`, an idle-session timeout) leaves a FATAL and a close
 * in the socket that nothing reads until the next statement is written; the
 * statement would then fail with an outcome we could not tell apart from a
 * statement cut while running. The check takes that failure instead, so the
 * caller's work is known never to have been sent and can go to another
 * connection (pgxpool pings a connection idle over 1 s, HikariCP over
 * 500 ms, for the same reason). Sessions idle for less, and new ones, are
 * not checked: the cost is one round trip per checkout of a long-idle session.
 *
 * @example
 * ```ts
 * const check = new CheckoutCheck(1_000)
 * check.released(session, now())
 * if (check.due(session, now())) {
 *   const dead = await check.run(session, ticket) // the connection's error, or undefined when it answered
 * }
 * ```
 */
export class CheckoutCheck {
  readonly #afterMs: number
  /** When each session was last handed back by its caller (monotonic ms). */
  readonly #releasedAt = new WeakMap<GovernedSession, number>()

  constructor(afterMs: number) {
    this.#afterMs = afterMs
  }

  /** A caller handed `session` back at `at`: its idle time counts from there. */
  released(session: GovernedSession, at: number): void {
    this.#releasedAt.set(session, at)
  }

  /** Whether `session` has been idle long enough to be checked before use. */
  due(session: GovernedSession, at: number): boolean {
    const releasedAt = this.#releasedAt.get(session)
    return releasedAt !== undefined && at - releasedAt >= this.#afterMs
  }

  /**
   * Sends the empty query. Resolves `undefined` when the server answered, or
   * the error when it did not (the session is then discarded: nothing of the
   * caller's was sent on it). Rejects at the caller's deadline or abort, the
   * session discarded too (a check that hangs means a connection we cannot trust).
   */
  async run(session: GovernedSession, ticket: RetryTicket): Promise<unknown> {
    const failed = (error: unknown): unknown => {
      session.discard(`found dead at checkout: ${String((error as Error | null)?.message ?? error)}`)
      return error
    }
    const answered = session.client.query('').then(() => undefined, failed)
    if (ticket.deadline === Infinity && !ticket.context?.signals.length && !ticket.signal) return answered
    return new BudgetRace(answered, ticket, (cause) => {
      session.discard('the check at checkout outlasted its caller')
      return errorForStop(cause, { phase: 'waiting', budgetMs: ticket.deadline - ticket.startedAt, waitedMs: now() - ticket.startedAt, ranMs: 0 })
    }).promise
  }
}
