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

/** What the warm stack needs of a connection. */
export interface WarmConnection {
  /** When pg-pool lent the connection (monotonic ms). */
  leasedAt: number
  /** When it was last kept (monotonic ms). */
  parkedAt: number
  /** It is in the warm stack now. */
  parked: boolean
  /** Hands the client back to pg-pool (destroyed when it was discarded meanwhile). */
  returnToPool(): void
}

/**
 * Released connections that the dialect keeps for the next query instead of
 * handing them back to pg-pool: a check-out and check-in through pg-pool
 * (its promise, a `process.nextTick`, an idle timer armed and cleared, its
 * listeners moved) costs more client CPU than our whole governance of a
 * statement. Kept connections are taken last-in first-out, so that under
 * steady load a few connections stay hot and the rest grow idle and go back.
 * The permits of kept connections are free: admission counts them as idle.
 */
export class WarmConnections<C extends WarmConnection> {
  readonly #idleMs: number
  readonly #leaseMs: number
  /** Oldest kept at the bottom: pushes come in time order and takes come off the top. */
  readonly #stack: C[] = []
  #sweepTimer: NodeJS.Timeout | undefined

  constructor(options: WarmConnectionsSettings) {
    this.#idleMs = options.idleMs
    this.#leaseMs = options.leaseMs
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
  take(): C | undefined {
    const connection = this.#stack.pop()
    if (connection) connection.parked = false
    return connection
  }

  /** Keeps a released connection; false when its lease is over and it must go back to pg-pool. */
  keep(connection: C, at: number): boolean {
    if (at - connection.leasedAt >= this.#leaseMs) return false
    connection.parkedAt = at
    connection.parked = true
    this.#stack.push(connection)
    if (!this.#sweepTimer) this.#armSweep(this.#idleMs)
    return true
  }

  /** Takes a kept connection out (it broke while kept) and hands it back to pg-pool. */
  evict(connection: C): void {
    if (!connection.parked) return
    const index = this.#stack.indexOf(connection)
    if (index >= 0) this.#stack.splice(index, 1)
    connection.parked = false
    connection.returnToPool()
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
    while (stale < this.#stack.length && (this.#stack[stale] as C).parkedAt <= cutoff) stale++
    this.#returnOldest(stale)
    const oldest = this.#stack[0]
    if (oldest) this.#armSweep(oldest.parkedAt + this.#idleMs - now())
  }

  #returnOldest(count: number): void {
    for (const connection of this.#stack.splice(0, count)) {
      connection.parked = false
      connection.returnToPool()
    }
  }
}
