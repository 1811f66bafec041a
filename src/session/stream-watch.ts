import { BudgetWatch } from '../context/budget-watch.js'
import { now } from '../context/monotonic-clock.js'
import type { QueryBudget } from '../context/query-budget.js'
import type { StopCause } from '../errors/stop-error.js'
import { keepAsCause, type StatementHost } from './statement-run.js'
import { isOurStatementTimeout, stoppedWhileRunning } from './statement-outcome.js'

/**
 * The deadline and signals of a streaming query. Between reads the backend is
 * idle (a cancel would be a no-op), so a stop there takes effect at the next
 * read; during a read the backend is cancelled.
 */
export class StreamWatch extends BudgetWatch {
  readonly #host: StatementHost
  readonly #budget: QueryBudget
  /** When the cursor's query was sent (monotonic ms). */
  readonly sentAt = now()
  #reading: { readonly promise: Promise<unknown>; readonly reject: (error: Error) => void } | undefined
  #stopError: Error | undefined

  constructor(host: StatementHost, budget: QueryBudget) {
    super(budget)
    this.#host = host
    this.#budget = budget
    this.watch()
  }

  get stopped(): boolean {
    return this.#stopError !== undefined
  }

  /**
   * Starts the next fetch, unless the stream was stopped between fetches: then
   * no fetch is sent at all (the backend is idle in its suspended portal, and
   * a fetch would run the query on for nobody).
   */
  read<R>(fetch: () => Promise<R[]>): Promise<R[]> {
    if (this.#stopError) return Promise.reject(this.#stopError)
    const promise = fetch()
    return new Promise<R[]>((resolve, reject) => {
      const reading = { promise, reject }
      this.#reading = reading
      promise.then(
        (rows) => {
          if (this.#reading !== reading) return
          this.#reading = undefined
          resolve(rows)
        },
        (error: unknown) => {
          if (this.#reading !== reading) return
          this.#reading = undefined
          reject(isOurStatementTimeout(error, this.deadline) ? stoppedWhileRunning({ kind: 'deadline' }, this.#budget, this.sentAt, error) : error)
        },
      )
    })
  }

  protected onStop(cause: StopCause): void {
    const error = stoppedWhileRunning(cause, this.#budget, this.sentAt)
    this.#stopError = error
    const reading = this.#reading
    if (reading) {
      this.#reading = undefined
      reading.reject(error)
      const ended = reading.promise.then(
        () => undefined,
        (serverError: unknown) => serverError,
      )
      this.#host.cancelInFlight({ whenEnded: () => ended }, cause.kind, (serverError) => keepAsCause(error, serverError))
    }
  }
}
