import type { CircuitState } from '../admission/circuit-breaker.js'
import type { Criticality } from '../context/criticality.js'

/**
 * A snapshot of the pool.
 *
 * @example
 * ```ts
 * const { used, max, waiting } = dialect.poolStats()
 * ```
 */
export interface PoolStats {
  /** The pool's `max`: connections the governor lets out at once. */
  readonly max: number
  /** Connections the server lets this pool reach: `max`, unless a refusal for capacity (53300) capped it lower. */
  readonly ceiling: number
  /** The server's sampled saturation (busy application backends / usable slots); 0 unless `fleet.saturation` is on. */
  readonly serverSaturation: number
  /** Connections pg-pool holds, idle or checked out. */
  readonly total: number
  /** Connections no query holds: idle in pg-pool, or kept warm by the governor (`warm`). */
  readonly idle: number
  /** Of `idle`, the connections the governor keeps for the next query instead of returning them to pg-pool. */
  readonly warm: number
  /** Connections a query holds (`total - idle`). */
  readonly used: number
  /** Admission permits held: checked out, being opened, draining a cancel, or held for a lost backend (`lostBackends`). */
  readonly permits: number
  /** Of `permits`, those of destroyed connections whose backend may still run a statement at the server (see "Network faults" in the README). */
  readonly lostBackends: number
  /** Callers in our wait queue. */
  readonly waiting: number
  /** Callers in pg-pool's own queue: stays 0 unless something bypasses the governor. */
  readonly pgPoolWaiting: number
  /** `(permits + waiting) / ceiling`: with `serverSaturation`, the larger of the two, what the shedding thresholds compare with. */
  readonly utilisation: number
  /** The most critical level refused by utilisation right now, if any. */
  readonly sheddingLevel: Criticality | undefined
  readonly circuit: CircuitState
  /** Running mean of how long a connection is held, in milliseconds. */
  readonly meanUseMs: number
  /** Running mean of the waits of callers that queued, in milliseconds. */
  readonly meanWaitMs: number
}

/** The stats of a pool not opened yet (or closed): nothing held, nothing waiting. */
export const IDLE_POOL_STATS: PoolStats = Object.freeze({
  max: 0,
  ceiling: 0,
  serverSaturation: 0,
  total: 0,
  idle: 0,
  warm: 0,
  used: 0,
  permits: 0,
  lostBackends: 0,
  waiting: 0,
  pgPoolWaiting: 0,
  utilisation: 0,
  sheddingLevel: undefined,
  circuit: 'closed',
  meanUseMs: 0,
  meanWaitMs: 0,
})
