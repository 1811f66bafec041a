import type { Criticality } from '../context/criticality.js'
import { BudgetWatch } from '../context/budget-watch.js'
import { now } from '../context/monotonic-clock.js'
import type { QueryContext } from '../context/query-context.js'
import { errorForStop, type StopCause } from '../errors/stop-error.js'
import type { HeapEntry } from './waiter-heap.js'

/** What a caller asks of the gate on the slow path. */
export interface AdmissionTicket {
  /** Criticality rank, 0 highest (critical_plus). */
  readonly rank: number
  readonly criticality: Criticality
  /** Monotonic deadline, Infinity for none. */
  readonly deadline: number
  /** When the budget started, to report it on expiry. */
  readonly startedAt: number
  readonly context: QueryContext | undefined
  /** Kysely's per-query `execute({ signal })`, when given. */
  readonly signal: AbortSignal | undefined
}

/** What a waiter needs of its queue: to leave it when it stops waiting. */
export interface WaiterQueue {
  /** Takes the waiter out; false when it was already granted or gone. */
  withdraw(waiter: Waiter): boolean
}

let nextSeq = 0

/**
 * One caller in the gate's queue: granted a permit, failed with the gate's
 * error, or stopped by its own deadline or abort, whichever comes first.
 *
 * @example
 * ```ts
 * const granted = new Promise<void>((resolve, reject) => queue.push(new Waiter(gate, ticket, resolve, reject)))
 * ```
 */
export class Waiter extends BudgetWatch implements HeapEntry {
  heapIndex = -1
  readonly seq = nextSeq++
  readonly rank: number
  readonly enqueuedAt = now()
  /** When it joined the permit queue (later than `enqueuedAt` when it first waited for the breaker's probe): the wait the estimator learns from. */
  queuedAt = this.enqueuedAt
  readonly #queue: WaiterQueue
  readonly #ticket: AdmissionTicket
  readonly #resolve: () => void
  readonly #reject: (error: Error) => void

  constructor(queue: WaiterQueue, ticket: AdmissionTicket, resolve: () => void, reject: (error: Error) => void) {
    super(ticket)
    this.#queue = queue
    this.#ticket = ticket
    this.rank = ticket.rank
    this.#resolve = resolve
    this.#reject = reject
    this.watch()
  }

  get ticket(): AdmissionTicket {
    return this.#ticket
  }

  grant(): void {
    this.unwatch()
    this.#resolve()
  }

  fail(error: Error): void {
    this.unwatch()
    this.#reject(error)
  }

  protected onStop(cause: StopCause): void {
    if (!this.#queue.withdraw(this)) return
    this.#reject(
      errorForStop(cause, { phase: 'waiting', budgetMs: this.deadline - this.#ticket.startedAt, waitedMs: now() - this.enqueuedAt, ranMs: 0 }),
    )
  }
}

