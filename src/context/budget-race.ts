import type { StopCause } from '../errors/stop-error.js'
import { BudgetWatch, type WatchedBudget } from './budget-watch.js'

/**
 * Settles with `work`, or, when the deadline passes or a signal aborts first,
 * rejects at once with the error `onStop` makes (which may also start the
 * cleanup of the work it abandons, such as a server-side cancel).
 *
 * @example
 * ```ts
 * const race = new BudgetRace(pool.connect(), budget, (cause) => new Error(cause.kind))
 * const client = await race.promise
 * ```
 */
export class BudgetRace<T> extends BudgetWatch {
  readonly promise: Promise<T>
  readonly #onStop: (cause: StopCause) => Error
  #resolve!: (value: T) => void
  #reject!: (error: Error) => void
  #stopped = false

  constructor(work: Promise<T>, budget: WatchedBudget, onStop: (cause: StopCause) => Error, translate: (error: unknown) => unknown = (error) => error) {
    super(budget)
    this.#onStop = onStop
    this.promise = new Promise<T>((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
    })
    this.watch()
    work.then(
      (value) => {
        if (this.unwatch()) this.#resolve(value)
      },
      (error: unknown) => {
        if (this.unwatch()) this.#reject(translate(error) as Error)
      },
    )
  }

  /** True once stopped by the deadline or an abort (the work may still be running). */
  get stopped(): boolean {
    return this.#stopped
  }

  protected onStop(cause: StopCause): void {
    this.#stopped = true
    this.#reject(this.#onStop(cause))
  }
}
