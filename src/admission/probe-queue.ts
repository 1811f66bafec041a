import { now } from '../context/monotonic-clock.js'
import type { LoadShedError } from '../errors/load-shed-error.js'
import type { CircuitBreaker } from './circuit-breaker.js'
import type { AdmissionTicket, Waiter } from './waiter.js'
import { WaiterHeap } from './waiter-heap.js'

/** What the probe queue needs of the admission gate. */
export interface ProbeQueueHost {
  /** The gate's refusal for load (utilisation, queue, feasibility), or undefined. */
  loadRefusal(ticket: AdmissionTicket): LoadShedError | undefined
  /** The gate's `circuit_open` refusal, with the wait until the next probe as its hint. */
  circuitOpen(ticket: AdmissionTicket): LoadShedError
  /** Gives the waiter a permit at once, or queues it for one like any caller. */
  place(waiter: Waiter): void
}

/**
 * Callers that the breaker would refuse, waiting for its probe's outcome
 * instead (issue 12: a reset that heals must not fail the callers that
 * arrive between the server's return and the probe that sees it).
 *
 * The rule: a caller waits when the probe can report within its budget:
 * a probe is out (half open), or the next one is due before its deadline.
 * Otherwise it is refused at once with `circuit_open` (fail fast: nothing
 * it could wait for comes in time). While callers wait, a due probe goes to
 * the best of them (critical first, then the earliest deadline) that load
 * admits, at the instant it is due (a timer, since no caller may come to
 * take it). When the probe succeeds, every waiter goes through admission
 * as if it had just arrived (a permit, the permit queue, or a refusal for
 * load). When it fails, every waiter is refused with `circuit_open` and the
 * wait until the next probe; with `retry.waitForRecovery`, those whose
 * deadline comes after the next probe wait for it instead (a caller without
 * a deadline waits for one probe only: nothing else would end its wait).
 * A failure that leaves the next probe due at once (the failed one went
 * longer ago than the wait between probes: its connect hung through a fault
 * and failed after the heal) refuses nobody: the next probe goes at once.
 *
 * At most `maxWaiting` callers wait; critical_plus is never refused for
 * that, as in the permit queue.
 *
 * @example
 * ```ts
 * const probes = new ProbeQueue(breaker, gate, { waitForRecovery: false, maxWaiting: 1_000 })
 * if (probes.accepts(ticket)) probes.push(waiter)
 * ```
 */
export class ProbeQueue {
  readonly #breaker: CircuitBreaker
  readonly #host: ProbeQueueHost
  readonly #waitForRecovery: boolean
  readonly #maxWaiting: number
  readonly #heap = new WaiterHeap<Waiter>()
  #timer: NodeJS.Timeout | undefined
  /** Set while waiters are being served: a probe taken here changes the breaker's state, which calls back in. */
  #serving = false

  constructor(breaker: CircuitBreaker, host: ProbeQueueHost, options: { readonly waitForRecovery: boolean; readonly maxWaiting: number }) {
    this.#breaker = breaker
    this.#host = host
    this.#waitForRecovery = options.waitForRecovery
    this.#maxWaiting = options.maxWaiting
    breaker.listen(() => this.#breakerMoved())
  }

  get size(): number {
    return this.#heap.size
  }

  /** Whether a caller the breaker refuses may wait for the probe: it can report within the caller's budget, and there is room. */
  accepts(ticket: AdmissionTicket): boolean {
    if (ticket.rank > 0 && this.#heap.size >= this.#maxWaiting) return false
    const breaker = this.#breaker
    return breaker.state === 'half_open' || breaker.nextProbeAt < ticket.deadline
  }

  /** Queues a waiter that {@link accepts} let in; a probe due now goes to the best waiter at once. */
  push(waiter: Waiter): void {
    this.#heap.push(waiter)
    this.#serve()
  }

  /** Takes a waiter out (its deadline or abort); false when it is not here. */
  remove(waiter: Waiter): boolean {
    if (!this.#heap.remove(waiter)) return false
    if (this.#heap.size === 0) this.#disarm()
    return true
  }

  /** Fails every waiter: the pool is going away. */
  rejectAll(error: Error): void {
    this.#disarm()
    for (let waiter = this.#heap.pop(); waiter; waiter = this.#heap.pop()) waiter.fail(error)
  }

  #breakerMoved(): void {
    if (this.#serving || this.#heap.size === 0) return
    const breaker = this.#breaker
    // The probe failed. Its waiters hear it now, unless they wait for the next one, or the next one is due at
    // once: the probe went long ago (a connect that hung through a fault), so its failure is old news.
    const probeAt = breaker.nextProbeAt
    if (breaker.state === 'open' && probeAt > now()) {
      for (const waiter of this.#drain()) {
        if (this.#waitForRecovery && waiter.deadline < Infinity && probeAt < waiter.deadline) this.#heap.push(waiter)
        else waiter.fail(this.#host.circuitOpen(waiter.ticket))
      }
    }
    this.#serve()
  }

  /** Closed: everyone goes through admission. Otherwise a due probe goes to the best waiter load admits; the timer wakes the queue for the next one. */
  #serve(): void {
    if (this.#serving) return
    this.#serving = true
    try {
      const breaker = this.#breaker
      if (breaker.state === 'closed') {
        this.#disarm()
        for (let waiter = this.#heap.pop(); waiter; waiter = this.#heap.pop()) this.#admit(waiter)
        return
      }
      while (this.#heap.size > 0 && breaker.probeDue) {
        const waiter = this.#heap.pop() as Waiter
        // Judged for load first, so that a caller refused for load does not take the probe and leave it unreported.
        const refusal = this.#host.loadRefusal(waiter.ticket)
        if (refusal) {
          waiter.fail(refusal)
          continue
        }
        if (breaker.allows()) this.#host.place(waiter)
        else this.#heap.push(waiter)
        break
      }
      this.#arm()
    } finally {
      this.#serving = false
    }
  }

  /** Admission for a waiter once the circuit has closed, as for a caller arriving now. */
  #admit(waiter: Waiter): void {
    const refusal = this.#host.loadRefusal(waiter.ticket)
    if (refusal) waiter.fail(refusal)
    else this.#host.place(waiter)
  }

  #drain(): Waiter[] {
    const waiters: Waiter[] = []
    for (let waiter = this.#heap.pop(); waiter; waiter = this.#heap.pop()) waiters.push(waiter)
    return waiters
  }

  #arm(): void {
    this.#disarm()
    if (this.#heap.size === 0 || this.#breaker.state === 'closed') return
    const delayMs = Math.max(1, Math.ceil(this.#breaker.nextProbeAt - now()))
    // Not unref'd: callers wait on it.
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      this.#serve()
    }, delayMs)
  }

  #disarm(): void {
    if (this.#timer) clearTimeout(this.#timer)
    this.#timer = undefined
  }
}
