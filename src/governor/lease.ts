import type { GovernedSession } from '../session/governed-session.js'
import type { Loan } from './warm-connections.js'

/**
 * One caller's hold on a session and on its admission permit, from
 * {@link Governor.acquire} to `release()`. Releasing is idempotent and is the
 * only way the permit goes back, whatever path the acquire took (a warm
 * session, an idle one from pg-pool, a new connection, a wait in the queue).
 *
 * @example
 * ```ts
 * const lease = await governor.acquire()
 * try {
 *   await lease.session.execute('select 1', [])
 * } finally {
 *   lease.release()
 * }
 * ```
 */
export class Lease {
  /** @internal The pg-pool check-out behind this lease. */
  readonly loan: Loan<GovernedSession>
  /** When the lease began (monotonic ms), to measure use time. */
  readonly checkedOutAt: number
  /** The session is new: pg-pool opened its connection for this lease. */
  readonly fresh: boolean
  readonly #onRelease: (lease: Lease) => void
  #released = false

  constructor(loan: Loan<GovernedSession>, checkedOutAt: number, fresh: boolean, onRelease: (lease: Lease) => void) {
    this.loan = loan
    this.checkedOutAt = checkedOutAt
    this.fresh = fresh
    this.#onRelease = onRelease
  }

  get session(): GovernedSession {
    return this.loan.session
  }

  get released(): boolean {
    return this.#released
  }

  /** Gives the session and the permit back; a second call does nothing. */
  release(): void {
    if (this.#released) return
    this.#released = true
    this.#onRelease(this)
  }
}
