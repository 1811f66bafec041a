import { now } from '../context/monotonic-clock.js'

/**
 * `unbounded`: the pool's own `max` is the limit. `starting`: the fleet's
 * limits are being read (the fleet option said several instances share the
 * server): new connections are opened one at a time, so that a fleet started
 * together does not open every pool's `max` at once before each instance knows
 * its share; `established` is what the pool holds. `capped`: `ceiling`
 * connections are what the pool can count on (the server refused one more
 * for capacity, or the fleet's fair share); one more is tried at `probeAt`.
 * `backoffMs` grows with each failed probe; above the fair share a
 * connection won by a probe is borrowed and the ceiling drops by one at
 * `decayAt`, so that borrowed slots keep coming back to the server.
 */
type CeilingState =
  | { readonly kind: 'unbounded' }
  | { readonly kind: 'starting'; readonly established: number }
  | { readonly kind: 'capped'; readonly ceiling: number; readonly probeAt: number; readonly backoffMs: number; readonly decayAt: number }

/** The first probe upward, this long after a refusal; the pace below the fair share. */
export const FIRST_CAPACITY_PROBE_MS = 100
/** Failed probes double the wait, up to this; the pace above the fair share. */
export const MAX_CAPACITY_PROBE_MS = 1_000
/** A connection above the fair share is borrowed for this long before the ceiling gives it back. */
export const BORROW_MS = 2_000
/** While starting, connects under way at once: enough to serve the queue, few enough not to crowd a fleet's simultaneous start. */
export const STARTING_CONNECTS = 1

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
 * When the sizing check says the fleet does not fit, each instance also
 * knows its fair share (the usable slots divided among the instances): it
 * keeps to it, probes at the first pace below it and at the slow pace above
 * it, and gives a connection above it back every {@link BORROW_MS}. Freed
 * slots so go to the instances below their share, whoever connected first.
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
  /** This instance's share of the server when the fleet is known not to fit; 0 when it fits or is unknown. */
  #fairShare = 0

  /**
   * `clock` is the monotonic clock in milliseconds; tests pass a fake one.
   * `starting`: the fleet's limits will be read; open connections one at a
   * time until {@link started} or {@link setFairShare}.
   */
  constructor(max: number, clock: () => number = now, starting = false) {
    this.#max = max
    this.#clock = clock
    if (starting) this.#state = { kind: 'starting', established: 0 }
  }

  /** Whether the pool is held below its `max` (a refusal, the fleet's fair share, or the one-at-a-time start). */
  get capped(): boolean {
    return this.#state.kind !== 'unbounded'
  }

  /** Whether connections are still opened one at a time, until the fleet's limits are known. */
  get starting(): boolean {
    return this.#state.kind === 'starting'
  }

  /** Connections the pool can count on now, without the probe's extra one: `max` when not capped, and while starting (nothing is learned yet). */
  get ceiling(): number {
    const state = this.#decayed()
    return state.kind === 'capped' ? state.ceiling : this.#max
  }

  /** When the next probe upward is due (monotonic ms); Infinity when not capped. */
  get probeAt(): number {
    const state = this.#state
    return state.kind === 'capped' ? state.probeAt : Infinity
  }

  /** The fair share set by {@link setFairShare}, 0 when none. */
  get fairShare(): number {
    return this.#fairShare
  }

  /** Connections the pool may have out now: the ceiling, one more while a probe is due, never above `max`. */
  limit(): number {
    const state = this.#decayed()
    if (state.kind === 'unbounded') return this.#max
    if (state.kind === 'starting') return Math.min(this.#max, state.established + STARTING_CONNECTS)
    return this.#clock() >= state.probeAt ? Math.min(this.#max, state.ceiling + 1) : state.ceiling
  }

  /**
   * The fleet is known not to fit the server (the sizing check at start):
   * `share` connections are this instance's fair part, and the ceiling comes
   * down to it if it was above.
   */
  setFairShare(share: number): void {
    const fair = Math.max(1, Math.min(this.#max, Math.floor(share)))
    this.#fairShare = fair
    const state = this.#state
    if (state.kind === 'capped' && state.ceiling <= fair) return
    const t = this.#clock()
    this.#state = { kind: 'capped', ceiling: fair, probeAt: t + MAX_CAPACITY_PROBE_MS, backoffMs: MAX_CAPACITY_PROBE_MS, decayAt: t + BORROW_MS }
  }

  /**
   * The fleet's limits are known and this pool fits, or they could not be
   * read: a pool still starting is no longer held to one connect at a time.
   * A cap learned meanwhile (a refusal, the fair share) stays.
   */
  started(): void {
    if (this.#state.kind === 'starting') this.#state = UNBOUNDED
  }

  /**
   * The server refused a session for capacity while the pool had
   * `established` connections open (idle or lent; not counting connects
   * still under way). A refusal when capped is a failed probe (or a connect
   * begun before the cap): the wait for the next one doubles, except below
   * the fair share (or with nothing held, which serves nothing), where the
   * first pace keeps the instance from being outrun to each freed slot.
   */
  refused(established: number): void {
    const state = this.#state
    const t = this.#clock()
    const ceiling = Math.max(0, Math.min(this.#max - 1, established))
    const below = ceiling === 0 || ceiling < this.#fairShare
    const backoffMs = state.kind === 'capped' && !below ? Math.min(MAX_CAPACITY_PROBE_MS, state.backoffMs * 2) : FIRST_CAPACITY_PROBE_MS
    this.#state = { kind: 'capped', ceiling, probeAt: t + backoffMs, backoffMs, decayAt: t + BORROW_MS }
  }

  /**
   * A new session was opened while the pool had `total` connections: one
   * more than the ceiling is proven, no more (the others may be leaving).
   * Without a fair share the pool is unbounded again once it reaches `max`.
   * Returns whether the ceiling rose.
   */
  connected(total: number): boolean {
    const state = this.#decayed()
    if (state.kind === 'starting') {
      if (total <= state.established) return false
      this.#state = { kind: 'starting', established: total }
      return true
    }
    if (state.kind === 'unbounded' || total <= state.ceiling) return false
    const t = this.#clock()
    // At or above the fair share only a probe raises the ceiling: connects begun before the cap prove room, not a right to it.
    if (this.#fairShare > 0 && state.ceiling >= this.#fairShare && t < state.probeAt) return false
    const ceiling = state.ceiling + 1
    if (ceiling >= this.#max && this.#fairShare === 0) {
      this.#state = UNBOUNDED
      return true
    }
    const paceMs = this.#fairShare > 0 && ceiling >= this.#fairShare ? MAX_CAPACITY_PROBE_MS : FIRST_CAPACITY_PROBE_MS
    this.#state = { kind: 'capped', ceiling: Math.min(this.#max, ceiling), probeAt: t + paceMs, backoffMs: paceMs, decayAt: t + BORROW_MS }
    return true
  }

  /**
   * The pool closed a connection and now has `established`. With a fair
   * share, that slot went back to the server: a ceiling above the share
   * follows it down, and coming back up takes a probe.
   */
  gaveBack(established: number): void {
    const state = this.#decayed()
    if (state.kind === 'starting') {
      this.#state = { kind: 'starting', established }
      return
    }
    if (this.#fairShare === 0 || state.kind !== 'capped') return
    const ceiling = Math.max(this.#fairShare, established)
    if (ceiling < state.ceiling) this.#state = { ...state, ceiling }
  }

  /** The state with borrowed connections above the fair share given back, one per BORROW_MS. */
  #decayed(): CeilingState {
    const state = this.#state
    if (state.kind !== 'capped' || this.#fairShare === 0 || state.ceiling <= this.#fairShare) return state
    const t = this.#clock()
    if (t < state.decayAt) return state
    const steps = 1 + Math.floor((t - state.decayAt) / BORROW_MS)
    const ceiling = Math.max(this.#fairShare, state.ceiling - steps)
    // The slot given back is left to the others for a probe interval before this instance tries for it again.
    this.#state = { ...state, ceiling, decayAt: t + BORROW_MS, probeAt: Math.max(state.probeAt, t + MAX_CAPACITY_PROBE_MS) }
    return this.#state
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
