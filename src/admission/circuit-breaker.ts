import { now } from '../context/monotonic-clock.js'
import { InvalidOptionError } from '../errors/invalid-option-error.js'
import { isCapacityRefusal } from './capacity-ceiling.js'

/**
 * `closed`: normal; `open`: failing fast; `half_open`: one probe is let through.
 *
 * @example
 * ```ts
 * dialect.events.on('circuit', (state: CircuitState) => console.log('circuit', state))
 * ```
 */
export type CircuitState = 'closed' | 'open' | 'half_open'

/**
 * Options of the breaker on connection-level failures.
 *
 * @example
 * ```ts
 * const circuit: CircuitBreakerOptions = { failureThreshold: 5, resetAfterMs: 2_000 }
 * ```
 */
export interface CircuitBreakerOptions {
  /** Consecutive connection failures that open the circuit. Default 5; 0 disables the breaker. */
  readonly failureThreshold?: number | undefined
  /**
   * The longest wait between probes while the circuit is open. Probes start
   * 50 ms after it opens and space out as the outage lasts (a twentieth of
   * the time open), up to this. Default 2000 ms.
   */
  readonly resetAfterMs?: number | undefined
}

/**
 * The breaker's state. `since` is when the circuit opened (the start of the
 * outage, kept across failed probes); `probeAt` when the next probe may go;
 * `sentAt` when the probe out went; `leaseUntil` when a probe that has not
 * reported is given up on.
 */
type BreakerState =
  | { readonly kind: 'closed'; readonly failures: number }
  | { readonly kind: 'open'; readonly since: number; readonly probeAt: number }
  | { readonly kind: 'half_open'; readonly since: number; readonly sentAt: number; readonly leaseUntil: number }

/** The first probe, this long after the circuit opens. */
const FIRST_PROBE_MS = 50
/**
 * A failed probe waits this fraction of the outage so far before the next:
 * recovery is seen within about 5% of the outage's length, and a long
 * outage costs one probe per `resetAfterMs`.
 */
const PROBE_FRACTION = 1 / 20

const CLOSED: BreakerState = Object.freeze({ kind: 'closed', failures: 0 })

/**
 * A small breaker, kept on our side rather than cockatiel's because admission
 * asks it a synchronous question on every query it cannot admit on the fast
 * path (`allows()`), and only connection-level failures, reported by the
 * driver, move it.
 *
 * Open, it refuses everything until the next probe is due; then `allows()`
 * lets exactly one caller through and the circuit is half open until that
 * probe's connect reports (`recordSuccess` closes, `recordFailure` reopens).
 * A probe can be admitted and never connect (it took a kept connection, or
 * its caller gave up first), so each probe holds a lease of `resetAfterMs`:
 * a probe that has not reported by then is presumed lost and the next caller
 * probes instead. A connect slower than the lease therefore overlaps with at
 * most one more probe per `resetAfterMs`.
 *
 * The wait after a failed probe counts from when that probe went, not from
 * its failure: a probe whose connect hung through a fault and failed only
 * after the heal (toxiproxy's `timeout`) tells of the server as it was when
 * it went, so the next one is due at once.
 *
 * The breaker only says who may connect; the admission gate decides what a
 * caller it refuses does: wait for the probe's outcome when it can come
 * within the caller's budget, or fail fast (`probe-queue.ts`).
 */
export class CircuitBreaker {
  readonly #threshold: number
  readonly #resetAfterMs: number
  readonly #onChange: (state: CircuitState) => void
  readonly #clock: () => number
  #state: BreakerState = CLOSED
  /** When the circuit last closed after an outage: a connect begun before then tells of the outage, not of now. */
  #closedAt = -Infinity
  #listener: (() => void) | undefined

  /** `clock` is the monotonic clock in milliseconds; tests pass a fake one. */
  constructor(options: CircuitBreakerOptions = {}, onChange: (state: CircuitState) => void = () => {}, clock: () => number = now) {
    const { failureThreshold = 5, resetAfterMs = 2_000 } = options
    if (!Number.isInteger(failureThreshold) || failureThreshold < 0) {
      throw new InvalidOptionError('circuitBreaker.failureThreshold', `must be a whole number >= 0; got ${String(failureThreshold)}`)
    }
    if (!Number.isFinite(resetAfterMs) || resetAfterMs <= 0) {
      throw new InvalidOptionError('circuitBreaker.resetAfterMs', `must be a positive number of milliseconds; got ${String(resetAfterMs)}`)
    }
    this.#threshold = failureThreshold
    this.#resetAfterMs = resetAfterMs
    this.#onChange = onChange
    this.#clock = clock
  }

  /** The state now; `half_open` only while a probe is out. One field read: admission checks it on every query. */
  get state(): CircuitState {
    return this.#state.kind
  }

  /** Milliseconds until a probe will be let through: 0 when closed, or half open (a probe is out and reports soon). */
  get retryAfterMs(): number {
    const state = this.#state
    return state.kind === 'open' ? Math.max(0, Math.ceil(state.probeAt - this.#clock())) : 0
  }

  /**
   * When a probe may next go: the time it is due while open, the end of the
   * lease of the probe that is out while half open, `-Infinity` when closed.
   */
  get nextProbeAt(): number {
    const state = this.#state
    return state.kind === 'closed' ? -Infinity : state.kind === 'open' ? state.probeAt : state.leaseUntil
  }

  /**
   * @internal The admission gate's hook, the only one: called after every
   * change of state and when a probe is given back, so that callers waiting
   * for a probe's outcome hear of it at once.
   */
  listen(listener: () => void): void {
    this.#listener = listener
  }

  /** Whether `allows()` would let a caller through now, without taking the probe. */
  get probeDue(): boolean {
    const state = this.#state
    if (state.kind === 'closed') return true
    return this.#clock() >= (state.kind === 'open' ? state.probeAt : state.leaseUntil)
  }

  /**
   * Whether a connection attempt may go ahead. Closed: always. Open: no, until
   * the next probe is due; then this caller is the probe and the circuit is
   * half open. Half open: no, until the probe's lease runs out.
   */
  allows(): boolean {
    const state = this.#state
    if (state.kind === 'closed') return true
    const t = this.#clock()
    if (state.kind === 'open') {
      if (t < state.probeAt) return false
      this.#set({ kind: 'half_open', since: state.since, sentAt: t, leaseUntil: t + this.#resetAfterMs })
      return true
    }
    if (t < state.leaseUntil) return false
    // The probe never reported: let this caller probe in its place.
    this.#state = { kind: 'half_open', since: state.since, sentAt: t, leaseUntil: t + this.#resetAfterMs }
    return true
  }

  /** The probe opened no connection (a kept one served it): the next caller probes in its place, at once. */
  releaseProbe(): void {
    const state = this.#state
    if (state.kind !== 'half_open') return
    this.#state = { kind: 'half_open', since: state.since, sentAt: state.sentAt, leaseUntil: this.#clock() }
    this.#listener?.()
  }

  /** The breaker's clock now: pass it to {@link recordFailure} as when a connect began. */
  attemptStarted(): number {
    return this.#clock()
  }

  /** A connection was opened (or lent by the pool): the server takes sessions. */
  recordSuccess(): void {
    const state = this.#state
    if (state === CLOSED) return
    if (state.kind === 'closed') this.#state = CLOSED
    else {
      this.#closedAt = this.#clock()
      this.#set(CLOSED)
    }
  }

  /**
   * A connection attempt that began at `startedAt` ({@link attemptStarted};
   * now when left out) failed for a reason {@link isConnectionFailure}
   * accepts. An attempt older than the circuit's last close, or than the
   * probe out, tells of the server as it was before them, and counts for
   * nothing: under toxiproxy's `timeout`, connects opened during the fault
   * fail only after the heal, and used to open the circuit again.
   */
  recordFailure(startedAt?: number): void {
    if (this.#threshold === 0) return
    const state = this.#state
    const t = this.#clock()
    const began = startedAt ?? t
    if (began < this.#closedAt || (state.kind === 'half_open' && began < state.sentAt)) return
    if (state.kind === 'closed') {
      const failures = state.failures + 1
      if (failures < this.#threshold) this.#state = { kind: 'closed', failures }
      else this.#set({ kind: 'open', since: t, probeAt: t + Math.min(FIRST_PROBE_MS, this.#resetAfterMs) })
    } else if (state.kind === 'half_open') {
      // The probe failed (or a connect begun with it).
      const waitMs = Math.min(this.#resetAfterMs, Math.max(FIRST_PROBE_MS, (t - state.since) * PROBE_FRACTION))
      this.#set({ kind: 'open', since: state.since, probeAt: state.sentAt + waitMs })
    }
    // Open: a connect begun before the circuit opened; the probe schedule stands.
  }

  #set(state: BreakerState): void {
    const changed = state.kind !== this.#state.kind
    this.#state = state
    if (!changed) return
    this.#onChange(state.kind)
    this.#listener?.()
  }
}

/**
 * Whether an error means the server could not be reached or refused the
 * session, as opposed to a failing statement. A refusal for capacity (53300,
 * too many connections) is not one: a full server is not a failing server
 * (DESIGN invariant 9), and opening the breaker would shed work that a slot
 * freed a moment later could have served.
 */
export function isConnectionFailure(error: unknown): boolean {
  // PgBouncer's `no more connections allowed` comes with a 08 code: capacity all the same.
  if (isCapacityRefusal(error)) return false
  const code = (error as { code?: unknown } | null)?.code
  if (typeof code === 'string') {
    if (code.startsWith('08')) return true // connection exception
    if (code === '57P01' || code === '57P02' || code === '57P03' || code === '28000' || code === '28P01') return true
    if (['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH', 'EPIPE', 'EAI_AGAIN'].includes(code)) return true
  }
  const message = error instanceof Error ? error.message : ''
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/.test(message)
}
