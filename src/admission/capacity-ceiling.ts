import { now } from '../context/monotonic-clock.js'

/**
 * `unbounded`: the pool's own `max` is the limit. `capped`: the server
 * refused a session for capacity (53300) while the pool held `ceiling`
 * connections; that is the most it can count on until a probe at `probeAt`
 * (one connection above the ceiling) succeeds. `backoffMs` grows with each
 * failed probe.
 */
type CeilingState =
  | { readonly kind: 'unbounded' }
  | { readonly kind: 'capped'; readonly ceiling: number; readonly probeAt: number; readonly backoffMs: number }

/** The first probe upward, this long after a refusal. */
export const FIRST_CAPACITY_PROBE_MS = 100
/** Failed probes double the wait, up to this. */
export const MAX_CAPACITY_PROBE_MS = 1_000

const UNBOUNDED: CeilingState = Object.freeze({ kind: 'unbounded' })

/**
 * The number of connections this pool can actually reach on a server that
 * others share. A fleet of instances whose pools add up to more than
 * `max_connections` cannot all reach their `max`: the server refuses the
 * extra sessions with 53300. That is not a failure (the breaker ignores it,
 * DESIGN invariant 9); the instance lowers its ceiling to what it holds,
 * serves its queue from those connections, and probes one connection higher
 * now and then (after {@link FIRST_CAPACITY_PROBE_MS}, doubling up to
 * {@link MAX_CAPACITY_PROBE_MS} while the server keeps refusing), so that
 * slots other instances give back are found.
 *
 * @example
 * ```ts
 * const ceiling = new CapacityCeiling(10)
 * ceiling.refused(3)     // the server said 53300 while we held 3
 * ceiling.limit()        // 3; 4 once the probe is due
 * ceiling.connected(4)   // the probe got a session: the ceiling is 4
 * ```
 */
export class CapacityCeiling {
  readonly #max: number
  readonly #clock: () => number
  #state: CeilingState = UNBOUNDED

  /** `clock` is the monotonic clock in milliseconds; tests pass a fake one. */
  constructor(max: number, clock: () => number = now) {
    this.#max = max
    this.#clock = clock
  }

  /** Whether a refusal has capped the pool below its `max`. */
  get capped(): boolean {
    return this.#state.kind === 'capped'
  }

  /** The ceiling learned from the last refusal, or `max`; without the probe's extra connection. */
  get ceiling(): number {
    const state = this.#state
    return state.kind === 'capped' ? state.ceiling : this.#max
  }

  /** When the next probe upward is due (monotonic ms); Infinity when not capped. */
  get probeAt(): number {
    const state = this.#state
    return state.kind === 'capped' ? state.probeAt : Infinity
  }

  /** Connections the pool may have out now: the ceiling, one more while a probe is due, never above `max`. */
  limit(): number {
    const state = this.#state
    if (state.kind === 'unbounded') return this.#max
    return this.#clock() >= state.probeAt ? Math.min(this.#max, state.ceiling + 1) : state.ceiling
  }

  /**
   * The server refused a session for capacity while the pool had
   * `established` connections open (idle or lent; not counting connects
   * still under way). A refusal when capped is a failed probe (or a connect
   * begun before the cap): the wait for the next one doubles.
   */
  refused(established: number): void {
    const state = this.#state
    const t = this.#clock()
    const ceiling = Math.max(0, Math.min(this.#max - 1, established))
    const backoffMs = state.kind === 'capped' ? Math.min(MAX_CAPACITY_PROBE_MS, state.backoffMs * 2) : FIRST_CAPACITY_PROBE_MS
    this.#state = { kind: 'capped', ceiling, probeAt: t + backoffMs, backoffMs }
  }

  /**
   * A session was opened (or lent) while the pool had `total` connections:
   * the ceiling rises to it, and to `max` (unbounded) once it gets there.
   * Returns whether the ceiling rose.
   */
  connected(total: number): boolean {
    const state = this.#state
    if (state.kind === 'unbounded' || total <= state.ceiling) return false
    if (total >= this.#max) this.#state = UNBOUNDED
    else this.#state = { kind: 'capped', ceiling: total, probeAt: this.#clock() + FIRST_CAPACITY_PROBE_MS, backoffMs: FIRST_CAPACITY_PROBE_MS }
    return true
  }
}

/**
 * Whether an error is the server (or a pooler in front of it) refusing a new
 * session for capacity: SQLSTATE 53300 (`too_many_connections`: max_connections,
 * reserved slots, a role's or a database's CONNECTION LIMIT), or PgBouncer's
 * `no more connections allowed` (it reports a protocol error code).
 *
 * @example
 * ```ts
 * pool.connect().catch((error) => { if (isCapacityRefusal(error)) console.warn('the server is full') })
 * ```
 */
export function isCapacityRefusal(error: unknown): boolean {
  if ((error as { code?: unknown } | null)?.code === '53300') return true
  const message = error instanceof Error ? error.message : ''
  return /too many (clients|connections)|remaining connection slots are reserved|no more connections allowed/.test(message)
}
