import { now } from '../context/monotonic-clock.js'
import { assertTimeoutMs } from '../context/validate.js'
import { InvalidOptionError } from '../errors/invalid-option-error.js'

/**
 * How long released connections stay with the dialect for the next query
 * before they go back to pg-pool.
 *
 * @example
 * ```ts
 * new GovernedPostgresDialect({ pool, warmConnections: { idleMs: 500, leaseMs: 2_000 } })
 * new GovernedPostgresDialect({ pool, warmConnections: false }) // every release goes back to pg-pool
 * ```
 */
export interface WarmConnectionsOptions {
  /** A kept connection that no query takes within this long goes back to pg-pool. Default 250 ms. */
  readonly idleMs?: number | undefined
  /**
   * A connection goes back to pg-pool at its first release this long after
   * pg-pool lent it, so that pg-pool's idle timeout and `maxLifetimeSeconds`
   * still see every connection regularly. Default 1000 ms.
   */
  readonly leaseMs?: number | undefined
}

/** The defaults of {@link WarmConnectionsOptions}. */
export const WARM_CONNECTION_DEFAULTS = Object.freeze({ idleMs: 250, leaseMs: 1_000 })

/** Validated {@link WarmConnectionsOptions}, defaults filled in. */
export interface WarmConnectionsSettings {
  readonly idleMs: number
  readonly leaseMs: number
}

/**
 * One pg-pool check-out: the session pg-pool lent and when. It outlives the
 * queries it serves; the warm stack stamps when it was last kept.
 */
export interface Loan<S> {
  readonly session: S
  /** When pg-pool lent the client (monotonic ms). */
  readonly lentAt: number
  /** When the warm stack last kept it (monotonic ms); the stack's own field. */
  parkedAt: number
}

/**
 * Released connections that the governor keeps for the next query instead of
 * handing them back to pg-pool: a check-out and check-in through pg-pool
 * (its promise, a `process.nextTick`, an idle timer armed and cleared, its
 * listeners moved) costs more client CPU than our whole governance of a
 * statement. Kept connections are taken last-in first-out, so that under
 * steady load a few connections stay hot and the rest grow idle and go back.
 * The permits of kept connections are free: admission counts them as idle.
 *
 * @example
 * ```ts
 * const warm = new WarmConnections(WARM_CONNECTION_DEFAULTS, (session) => session.returnToPool())
 * if (!warm.keep(loan, now())) loan.session.returnToPool()
 * const next = warm.take() // the loan kept last, or undefined
 * ```
 */
export class WarmConnections<S> {
  readonly #idleMs: number
  readonly #leaseMs: number
  readonly #giveBack: (session: S) => void
  /** Oldest kept at the bottom: pushes come in time order and takes come off the top. */
  readonly #stack: Loan<S>[] = []
  #sweepTimer: NodeJS.Timeout | undefined

  /** `giveBack` hands a session that leaves the stack other than by `take` back to pg-pool. */
  constructor(options: WarmConnectionsSettings, giveBack: (session: S) => void) {
    this.#idleMs = options.idleMs
    this.#leaseMs = options.leaseMs
    this.#giveBack = giveBack
  }

  /**
   * Validates the dialect's `warmConnections` option: `false` (off), or
   * `idleMs` and `leaseMs` from 1 ms up. Throws {@link InvalidOptionError}.
   */
  static resolve(option: WarmConnectionsOptions | false | undefined): WarmConnectionsSettings | undefined {
    if (option === false) return undefined
    if (option === undefined) return WARM_CONNECTION_DEFAULTS
    if (option === null || typeof option !== 'object') {
      throw new InvalidOptionError('warmConnections', `must be false or an object with idleMs and leaseMs; got ${String(option)}`)
    }
    const idleMs = option.idleMs ?? WARM_CONNECTION_DEFAULTS.idleMs
    const leaseMs = option.leaseMs ?? WARM_CONNECTION_DEFAULTS.leaseMs
    assertTimeoutMs(idleMs, 'warmConnections.idleMs')
    assertTimeoutMs(leaseMs, 'warmConnections.leaseMs')
    if (idleMs < 1) throw new InvalidOptionError('warmConnections.idleMs', `must be at least 1 ms (use warmConnections: false to turn keeping off); got ${idleMs}`)
    if (leaseMs < 1) throw new InvalidOptionError('warmConnections.leaseMs', `must be at least 1 ms (use warmConnections: false to turn keeping off); got ${leaseMs}`)
    return Object.freeze({ idleMs, leaseMs })
  }

  /** Connections kept now. */
  get size(): number {
    return this.#stack.length
  }

  /** The most recently kept connection, or `undefined`. */
  take(): Loan<S> | undefined {
    return this.#stack.pop()
  }

  /** Keeps a released connection; false when its lease is over and it must go back to pg-pool. */
  keep(loan: Loan<S>, at: number): boolean {
    if (at - loan.lentAt >= this.#leaseMs) return false
    loan.parkedAt = at
    this.#stack.push(loan)
    if (!this.#sweepTimer) this.#armSweep(this.#idleMs)
    return true
  }

  /** Takes a kept session out (it broke while kept) and hands it back to pg-pool; false when it is not kept. */
  evict(session: S): boolean {
    const index = this.#stack.findIndex((loan) => loan.session === session)
    if (index < 0) return false
    this.#stack.splice(index, 1)
    this.#giveBack(session)
    return true
  }

  /** Hands every kept connection back to pg-pool (the dialect is being destroyed). */
  drain(): void {
    if (this.#sweepTimer) clearTimeout(this.#sweepTimer)
    this.#sweepTimer = undefined
    this.#returnOldest(this.#stack.length)
  }

  #armSweep(delayMs: number): void {
    this.#sweepTimer = setTimeout(this.#sweep, Math.max(1, Math.ceil(delayMs)))
    // The timer alone keeps nothing alive; kept sockets do, until the sweep hands them to pg-pool (which unrefs them under allowExitOnIdle).
    this.#sweepTimer.unref()
  }

  readonly #sweep = (): void => {
    this.#sweepTimer = undefined
    const cutoff = now() - this.#idleMs
    let stale = 0
    while (stale < this.#stack.length && (this.#stack[stale] as Loan<S>).parkedAt <= cutoff) stale++
    this.#returnOldest(stale)
    const oldest = this.#stack[0]
    if (oldest) this.#armSweep(oldest.parkedAt + this.#idleMs - now())
  }

  #returnOldest(count: number): void {
    for (const loan of this.#stack.splice(0, count)) this.#giveBack(loan.session)
  }
}
