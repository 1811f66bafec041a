import type { StopCause } from '../errors/stop-error.js'
import { deadlineTimer, type DeadlineLink, type DeadlineWatcher } from './deadline-timer.js'
import type { AbortWatcher, QueryContext } from './query-context.js'


/**
 * Settles with `work`, or, when the deadline passes or a signal aborts first,
 * rejects at once with the error `onStop` makes (which may also start the
 * cleanup of the work it abandons, such as a server-side cancel). Uses the
 * shared deadline timer and the context's shared signal listeners: no timer
 * and no listener of its own unless given Kysely's per-query signal.
 */
export class BudgetRace<T> implements DeadlineWatcher, AbortWatcher {
  deadlineLink: DeadlineLink | undefined = undefined
  readonly deadline: number
  readonly promise: Promise<T>
  readonly #context: QueryContext | undefined
  readonly #signal: AbortSignal | undefined
  readonly #onStop: (cause: StopCause) => Error
  readonly #onSignal = (): void => this.onAbort((this.#signal as AbortSignal).reason)
  #resolve!: (value: T) => void
  #reject!: (error: Error) => void
  #done = false
  #stopped = false

  constructor(
    work: Promise<T>,
    budget: { readonly deadline: number; readonly context: QueryContext | undefined; readonly signal?: AbortSignal | undefined },
    onStop: (cause: StopCause) => Error,
    translate: (error: unknown) => unknown = (error) => error,
  ) {
    this.deadline = budget.deadline
    this.#context = budget.context
    this.#signal = budget.signal
    this.#onStop = onStop
    this.promise = new Promise<T>((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
    })
    if (this.deadline < Infinity) deadlineTimer.add(this)
    this.#context?.watch(this)
    this.#signal?.addEventListener('abort', this.#onSignal)
    work.then(
      (value) => {
        if (this.#finish()) this.#resolve(value)
      },
      (error: unknown) => {
        if (this.#finish()) this.#reject(translate(error) as Error)
      },
    )
  }

  /** True once stopped by the deadline or an abort (the work may still be running). */
  get stopped(): boolean {
    return this.#stopped
  }

  onDeadline(): void {
    if (!this.#finish()) return
    this.#stopped = true
    this.#reject(this.#onStop({ kind: 'deadline' }))
  }

  onAbort(reason: unknown): void {
    if (!this.#finish()) return
    this.#stopped = true
    this.#reject(this.#onStop({ kind: 'abort', reason }))
  }

  #finish(): boolean {
    if (this.#done) return false
    this.#done = true
    deadlineTimer.delete(this)
    this.#context?.unwatch(this)
    this.#signal?.removeEventListener('abort', this.#onSignal)
    return true
  }
}
