import { deadlineTimer, type DeadlineWatcher } from '../context/deadline-timer.js'
import { now } from '../context/monotonic-clock.js'
import type { AbortWatcher, QueryContext } from '../context/query-context.js'
import { DeadlineExceededError } from '../errors/deadline-exceeded-error.js'
import { QueryCanceledError } from '../errors/query-canceled-error.js'
import { WaiterHeap, type HeapEntry } from './waiter-heap.js'

/** What a caller asks of the gate. */
export interface AdmissionTicket {
  /** Criticality rank, 0 highest. */
  readonly rank: number
  /** Monotonic deadline, Infinity for none. */
  readonly deadline: number
  /** When the query's budget started, to report the budget on expiry. */
  readonly startedAt: number
  readonly context: QueryContext | undefined
  /** Kysely's per-query `execute({ signal })`, when given. */
  readonly signal: AbortSignal | undefined
}

let nextSeq = 0

class Waiter implements HeapEntry, DeadlineWatcher, AbortWatcher {
  heapIndex = -1
  readonly seq = nextSeq++
  readonly rank: number
  readonly deadline: number
  readonly #gate: AdmissionGate
  readonly #ticket: AdmissionTicket
  readonly #enqueuedAt = now()
  readonly #resolve: () => void
  readonly #reject: (error: Error) => void
  readonly #onSignal = (): void => this.onAbort((this.#ticket.signal as AbortSignal).reason)

  constructor(gate: AdmissionGate, ticket: AdmissionTicket, resolve: () => void, reject: (error: Error) => void) {
    this.#gate = gate
    this.#ticket = ticket
    this.rank = ticket.rank
    this.deadline = ticket.deadline
    this.#resolve = resolve
    this.#reject = reject
    if (ticket.deadline < Infinity) deadlineTimer.add(this)
    ticket.context?.watch(this)
    ticket.signal?.addEventListener('abort', this.#onSignal)
  }

  grant(): void {
    this.#detach()
    this.#resolve()
  }

  onDeadline(): void {
    if (!this.#gate.withdraw(this)) return
    this.#detach()
    const t = now()
    this.#reject(
      new DeadlineExceededError({
        phase: 'waiting',
        budgetMs: this.deadline - this.#ticket.startedAt,
        waitedMs: t - this.#enqueuedAt,
        ranMs: 0,
      }),
    )
  }

  onAbort(reason: unknown): void {
    if (!this.#gate.withdraw(this)) return
    this.#detach()
    this.#reject(new QueryCanceledError({ phase: 'waiting', reason, waitedMs: now() - this.#enqueuedAt, ranMs: 0 }))
  }

  #detach(): void {
    deadlineTimer.delete(this)
    this.#ticket.context?.unwatch(this)
    this.#ticket.signal?.removeEventListener('abort', this.#onSignal)
  }
}

/**
 * Our own wait in front of pg-pool: at most `max` connections are out, and when
 * one comes back the most critical waiter (then the earliest deadline) gets it.
 * Unlike pg-pool's queue, a waiter that is aborted or whose deadline passes
 * leaves at once, so pg-pool's own queue stays empty.
 */
export class AdmissionGate {
  readonly #max: number
  readonly #queue = new WaiterHeap<Waiter>()
  #inUse = 0

  constructor(max: number) {
    this.#max = max
  }

  get max(): number {
    return this.#max
  }

  /** Permits held: connections out of the pool, or being opened, on our behalf. */
  get inUse(): number {
    return this.#inUse
  }

  /** Callers waiting for a permit. */
  get waiting(): number {
    return this.#queue.size
  }

  /** Takes a permit without waiting when one is free and nobody is ahead. */
  tryAcquire(): boolean {
    if (this.#inUse < this.#max && this.#queue.size === 0) {
      this.#inUse++
      return true
    }
    return false
  }

  /** Waits for a permit, bounded by the ticket's deadline and signals. */
  acquire(ticket: AdmissionTicket): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#queue.push(new Waiter(this, ticket, resolve, reject))
    })
  }

  /** Returns a permit: to the best waiter if there is one. */
  release(): void {
    const next = this.#queue.pop()
    if (next) {
      next.grant()
    } else {
      this.#inUse--
    }
  }

  /** Takes a waiter out of the queue; false when it was already granted or gone. */
  withdraw(waiter: Waiter): boolean {
    return this.#queue.remove(waiter)
  }
}
