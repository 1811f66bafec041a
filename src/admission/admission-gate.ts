import { CRITICALITIES } from '../context/criticality.js'
import { now } from '../context/monotonic-clock.js'
import { InvalidOptionError } from '../errors/invalid-option-error.js'
import { LoadShedError } from '../errors/load-shed-error.js'
import type { ResolvedAdmissionPolicy } from './admission-policy.js'
import { CapacityCeiling } from './capacity-ceiling.js'
import type { CircuitBreaker } from './circuit-breaker.js'
import type { LoadEstimator } from './load-estimator.js'
import { ProbeQueue } from './probe-queue.js'
import { Waiter, type AdmissionTicket } from './waiter.js'
import { WaiterHeap } from './waiter-heap.js'

export type { AdmissionTicket } from './waiter.js'

/** Ranks at or above this one may use the reserve. */
const LOWEST_RESERVE_RANK = 1
/** Below this, a retry-after hint says nothing useful. */
const MIN_RETRY_AFTER_MS = 50

/**
 * Admission in front of pg-pool: at most `max` connections are out; when one
 * comes back the most critical waiter (then the earliest deadline) gets it.
 * Work is refused early, by criticality, before the pool is exhausted:
 * utilisation thresholds, a bounded queue, deadline feasibility and the
 * circuit breaker. A waiter that is aborted or expires leaves at once, so
 * pg-pool's own queue stays empty.
 *
 * Two views from outside the pool narrow it: the {@link CapacityCeiling}
 * (the server refused a session for capacity, so fewer than `max`
 * connections can be had: the limit and the utilisation are taken against
 * what can be reached), and the server's saturation sampled by the fleet
 * option (shedding compares the larger of the pool's utilisation and the
 * server's with the thresholds).
 */
export class AdmissionGate {
  readonly #max: number
  readonly #policy: ResolvedAdmissionPolicy
  readonly #estimator: LoadEstimator
  readonly #breaker: CircuitBreaker
  readonly #queue = new WaiterHeap<Waiter>()
  /** Callers the breaker would refuse, waiting for its probe's outcome. */
  readonly #probes: ProbeQueue
  readonly #waitingByRank: [number, number, number, number] = [0, 0, 0, 0]
  /** Below this many permits + waiters, every level is admitted without looking at its context. */
  readonly #freeAdmissionLimit: number
  readonly #ceiling: CapacityCeiling
  /** The fast path's bound now: the free admission limit, or 0 while capped or while the server is saturated. */
  #fastLimit: number
  #serverSaturation = 0
  #probeTimer: NodeJS.Timeout | undefined
  #inUse = 0

  /** `waitForRecovery`: a caller waiting for the breaker's probe waits for the next one when it fails, while its deadline allows (`retry.waitForRecovery`). */
  constructor(
    max: number,
    policy: ResolvedAdmissionPolicy,
    estimator: LoadEstimator,
    breaker: CircuitBreaker,
    ceiling: CapacityCeiling = new CapacityCeiling(max),
    waitForRecovery = false,
  ) {
    if (policy.reserve >= max) {
      throw new InvalidOptionError('admission.reserve', `must be below the pool's max (${max}); got ${policy.reserve}`)
    }
    this.#max = max
    this.#policy = policy
    this.#estimator = estimator
    this.#breaker = breaker
    const lowest = Math.min(...policy.thresholds)
    this.#freeAdmissionLimit = Math.min(Math.ceil(lowest * max), max - policy.reserve)
    this.#ceiling = ceiling
    this.#fastLimit = this.#freeAdmissionLimit
    this.#probes = new ProbeQueue(
      breaker,
      { loadRefusal: (ticket) => this.#loadRefusal(ticket), circuitOpen: (ticket) => this.#circuitOpen(ticket), place: (waiter) => this.#place(waiter) },
      { waitForRecovery, maxWaiting: policy.maxWaiting },
    )
    // A ceiling that starts capped (one connect at a time until the fleet's limits are read) closes the fast path.
    this.#updateFastLimit()
  }

  /** Connections the server has let this pool reach: `max` unless a refusal for capacity capped it. */
  get ceiling(): number {
    return this.#ceiling.ceiling
  }

  /** The server's sampled saturation (0 when not sampled): busy application backends / usable slots. */
  get serverSaturation(): number {
    return this.#serverSaturation
  }

  /**
   * The server refused a session for capacity while the pool had
   * `established` connections: the limit drops to them until a probe finds
   * more room. Waiters stay queued (critical first) for the connections
   * there are.
   */
  capacityRefused(established: number): void {
    this.#ceiling.refused(established)
    this.#updateFastLimit()
    this.#armProbe()
  }

  /** The fleet does not fit the server: `share` connections are this instance's fair part (see {@link CapacityCeiling.setFairShare}). */
  setFairShare(share: number): void {
    this.#ceiling.setFairShare(share)
    this.#updateFastLimit()
    this.#pump()
  }

  /** The fleet's limits are known (or could not be read): a pool still starting stops opening one connection at a time. */
  started(): void {
    if (!this.#ceiling.starting) return
    this.#ceiling.started()
    this.#updateFastLimit()
    this.#pump()
  }

  /** The pool closed a connection and now has `established`: with a fair share set, the ceiling follows it down. */
  gaveBack(established: number): void {
    this.#ceiling.gaveBack(established)
  }

  /**
   * A new connection was had while the pool held `total`: a capped ceiling
   * rises to it (true when it rose), a pool still starting may open the next
   * one, and waiters that now fit are let in.
   */
  connected(total: number): boolean {
    const ceiling = this.#ceiling
    if (!ceiling.capped) return false
    const starting = ceiling.starting
    if (!ceiling.connected(total)) return false
    this.#updateFastLimit()
    this.#pump()
    return !starting
  }

  /** Whether a refusal for capacity or the fleet's fair share has capped the pool below its `max` (not the one-at-a-time start). */
  get capped(): boolean {
    return this.#ceiling.capped && !this.#ceiling.starting
  }

  /**
   * The server's saturation from the fleet sampler, 0..1 (or above, when
   * others hold more than the configured capacity): shedding treats it like
   * the pool's utilisation. `0` when sampling stops.
   */
  setServerSaturation(saturation: number): void {
    this.#serverSaturation = Number.isFinite(saturation) && saturation > 0 ? saturation : 0
    this.#updateFastLimit()
  }

  get max(): number {
    return this.#max
  }

  /** Permits held: connections out of the pool, being opened, or draining a cancel. */
  get inUse(): number {
    return this.#inUse
  }

  /** Callers waiting: for a permit, or for the breaker's probe. */
  get waiting(): number {
    return this.#queue.size + this.#probes.size
  }

  /** `(in use + waiting) / max`, with `max` lowered to the ceiling the server lets this pool reach. */
  get utilisation(): number {
    return (this.#inUse + this.#queue.size) / this.#reachable()
  }

  /** What the shedding thresholds compare with: the larger of the pool's utilisation and the server's saturation. */
  get pressure(): number {
    const utilisation = this.utilisation
    return utilisation > this.#serverSaturation ? utilisation : this.#serverSaturation
  }

  /**
   * The most critical level currently refused by utilisation, or `undefined`
   * when every level is admitted.
   */
  get sheddingLevel(): (typeof CRITICALITIES)[number] | undefined {
    const utilisation = this.pressure
    let level: (typeof CRITICALITIES)[number] | undefined
    for (let rank = CRITICALITIES.length - 1; rank >= 0; rank--) {
      if (utilisation >= (this.#policy.thresholds[rank] as number)) level = CRITICALITIES[rank]
      else break
    }
    return level
  }

  /**
   * The hot path: takes a permit when the pool is below every threshold and
   * nobody waits, without looking at the caller's context at all.
   */
  tryAcquire(): boolean {
    if (this.#inUse + this.#queue.size < this.#fastLimit && this.#breaker.state === 'closed') {
      this.#inUse++
      return true
    }
    return false
  }

  /**
   * The second fast path, for a caller whose criticality is known: takes a
   * permit when this level is below its threshold, a connection is free for
   * it and nobody of its level or above waits. No allocation, no timer.
   */
  tryAcquireFor(rank: number): boolean {
    if (
      this.#inUse < this.#limitFor(rank) &&
      this.pressure < (this.#policy.thresholds[rank] as number) &&
      this.#waitingAtOrAbove(rank) === 0 &&
      this.#breaker.state === 'closed'
    ) {
      this.#inUse++
      return true
    }
    return false
  }

  /**
   * The slow path: admits at once, refuses with a {@link LoadShedError}, or
   * queues the caller until a permit, its deadline or its abort. While the
   * breaker is not closed, the caller waits for the probe's outcome when it
   * can come within its budget (see {@link ProbeQueue}), or is refused with
   * `circuit_open` at once.
   */
  acquire(ticket: AdmissionTicket): Promise<void> {
    if (this.#breaker.state !== 'closed') {
      if (!this.#probes.accepts(ticket)) return Promise.reject(this.#circuitOpen(ticket))
      return new Promise<void>((resolve, reject) => this.#probes.push(new Waiter(this, ticket, resolve, reject)))
    }
    const refusal = this.#loadRefusal(ticket)
    if (refusal) return Promise.reject(refusal)
    const { rank } = ticket
    if (this.#inUse < this.#limitFor(rank) && this.#waitingAtOrAbove(rank) === 0) {
      this.#inUse++
      return Promise.resolve()
    }
    return new Promise<void>((resolve, reject) => this.#enqueue(new Waiter(this, ticket, resolve, reject)))
  }

  /**
   * Returns a permit: to the best waiter that may take it, if any. `heldMs`,
   * how long the connection was used, feeds the wait predictions; a permit
   * that never got a connection passes none.
   */
  release(heldMs?: number): void {
    if (heldMs !== undefined) this.#estimator.recordUse(heldMs)
    const next = this.#queue.peek()
    if (next && this.#inUse - 1 < this.#limitFor(next.rank)) {
      this.#queue.pop()
      this.#count(next.rank, -1)
      this.#estimator.recordWait(now() - next.queuedAt)
      next.grant()
    } else {
      this.#inUse--
    }
  }

  /** Returns a permit that was never used for a connection (the connect failed). */
  abandon(): void {
    this.release()
  }

  /** Rejects every waiter with `error`: the pool is going away. */
  rejectAll(error: Error): void {
    if (this.#probeTimer) clearTimeout(this.#probeTimer)
    this.#probeTimer = undefined
    this.#probes.rejectAll(error)
    for (let waiter = this.#queue.pop(); waiter; waiter = this.#queue.pop()) {
      this.#count(waiter.rank, -1)
      waiter.fail(error)
    }
  }

  /** Takes a waiter out of the queue; false when it was already granted or gone. */
  withdraw(waiter: Waiter): boolean {
    if (!this.#queue.remove(waiter)) return this.#probes.remove(waiter)
    this.#count(waiter.rank, -1)
    return true
  }

  /** A waiter admitted by load (a caller out of the probe queue): a permit now, or a place in the permit queue. */
  #place(waiter: Waiter): void {
    if (this.#inUse < this.#limitFor(waiter.rank) && this.#waitingAtOrAbove(waiter.rank) === 0) {
      this.#inUse++
      waiter.grant()
    } else {
      waiter.queuedAt = now()
      this.#enqueue(waiter)
    }
  }

  #enqueue(waiter: Waiter): void {
    this.#queue.push(waiter)
    this.#count(waiter.rank, +1)
    this.#armProbe()
  }

  #circuitOpen(ticket: AdmissionTicket): LoadShedError {
    return new LoadShedError({
      criticality: CRITICALITIES[ticket.rank] as (typeof CRITICALITIES)[number],
      reason: 'circuit_open',
      retryAfterMs: Math.max(MIN_RETRY_AFTER_MS, this.#breaker.retryAfterMs),
      detail: 'connections to the server are failing',
    })
  }

  #loadRefusal(ticket: AdmissionTicket): LoadShedError | undefined {
    const { rank } = ticket
    const criticality = CRITICALITIES[rank] as (typeof CRITICALITIES)[number]
    if (rank === 0) return undefined // critical_plus: only its deadline applies
    const meanUseMs = this.#estimator.meanUseMs
    const utilisation = this.utilisation
    const threshold = this.#policy.thresholds[rank] as number
    if (utilisation >= threshold || this.#serverSaturation >= threshold) {
      const what =
        utilisation >= this.#serverSaturation
          ? `pool utilisation ${utilisation.toFixed(2)}${this.capped ? ` (of the ${this.#ceiling.ceiling} connections the server lets this pool reach)` : ''}`
          : `server saturation ${this.#serverSaturation.toFixed(2)} (busy application backends / usable slots)`
      return new LoadShedError({
        criticality,
        reason: 'utilisation',
        retryAfterMs: Math.max(MIN_RETRY_AFTER_MS, Math.ceil(meanUseMs)),
        detail: `${what} is at or above the ${criticality} threshold ${threshold}`,
      })
    }
    const mustWait = this.#inUse >= this.#limitFor(rank) || this.#waitingAtOrAbove(rank) > 0
    if (!mustWait) return undefined
    if (this.#queue.size >= this.#policy.maxWaiting) {
      return new LoadShedError({
        criticality,
        reason: 'queue',
        retryAfterMs: Math.max(MIN_RETRY_AFTER_MS, Math.ceil(this.#estimator.predictWaitMs(this.#queue.size, this.#reachable()))),
        detail: `the wait queue is full (${this.#queue.size} waiting)`,
      })
    }
    if (this.#policy.feasibility && this.#estimator.confident && ticket.deadline < Infinity) {
      const predictedMs = this.#estimator.predictWaitMs(this.#waitingAtOrAbove(rank), this.#reachable()) + meanUseMs
      const remainingMs = ticket.deadline - now()
      if (predictedMs > remainingMs) {
        return new LoadShedError({
          criticality,
          reason: 'deadline',
          retryAfterMs: Math.max(MIN_RETRY_AFTER_MS, Math.ceil(predictedMs)),
          detail: `predicted wait and run of ${Math.ceil(predictedMs)} ms exceeds the remaining ${Math.max(0, Math.floor(remainingMs))} ms`,
        })
      }
    }
    return undefined
  }

  #count(rank: number, delta: 1 | -1): void {
    this.#waitingByRank[rank as 0 | 1 | 2 | 3] += delta
  }

  #limitFor(rank: number): number {
    const limit = this.#ceiling.capped ? this.#ceiling.limit() : this.#max
    return rank > LOWEST_RESERVE_RANK ? limit - this.#policy.reserve : limit
  }

  /** The connections utilisation and wait predictions are taken against: the ceiling, at least one. */
  #reachable(): number {
    const ceiling = this.#ceiling.ceiling
    return ceiling > 1 ? ceiling : 1
  }

  #updateFastLimit(): void {
    const lowest = this.#policy.thresholds[this.#policy.thresholds.length - 1] as number
    this.#fastLimit = this.#ceiling.capped || this.#serverSaturation >= lowest ? 0 : this.#freeAdmissionLimit
  }

  /** Lets in the waiters that fit the limit now (it rose: a probe came due, or a connection was had). */
  #pump(): void {
    for (let next = this.#queue.peek(); next && this.#inUse < this.#limitFor(next.rank); next = this.#queue.peek()) {
      this.#queue.pop()
      this.#count(next.rank, -1)
      this.#estimator.recordWait(now() - next.queuedAt)
      this.#inUse++
      next.grant()
    }
    if (!this.#ceiling.capped && this.#probeTimer) {
      clearTimeout(this.#probeTimer)
      this.#probeTimer = undefined
    }
  }

  /**
   * While capped with callers waiting, wakes the queue when the probe upward
   * comes due: a pool that holds no connection at all gets no release to do it.
   */
  #armProbe(): void {
    // Starting (one connect at a time) has no probe: its connects' outcomes wake the queue.
    if (this.#probeTimer || !this.#ceiling.capped || this.#queue.size === 0 || this.#ceiling.probeAt === Infinity) return
    const delayMs = Math.ceil(this.#ceiling.probeAt - now())
    if (delayMs <= 0) {
      // Due already: the caller's own clock read may have said "not yet" a moment ago. Let in
      // whoever fits now (once due, a probe stays due, so this does not loop); whoever still does
      // not fit waits for a release or for the probe's outcome.
      this.#pump()
      return
    }
    this.#probeTimer = setTimeout(() => {
      this.#probeTimer = undefined
      this.#pump()
      this.#armProbe()
    }, delayMs)
    // Not unref'd: callers wait on it, as they would on a socket pg-pool opens for them.
  }

  #waitingAtOrAbove(rank: number): number {
    let count = 0
    for (let r = 0; r <= rank; r++) count += this.#waitingByRank[r] as number
    return count
  }
}
