import type { StopCause } from '../errors/stop-error.js'
import { deadlineTimer, type DeadlineLink, type DeadlineWatcher } from './deadline-timer.js'
import type { AbortWatcher, QueryContext } from './query-context.js'

/** What a watch looks at: a deadline, the ambient context's signals, and an optional signal of the caller's own. */
export interface WatchedBudget {
  /** Monotonic deadline, Infinity for none. */
  readonly deadline: number
  readonly context: QueryContext | undefined
  /** A signal outside the context, such as Kysely's per-query `execute({ signal })`. */
  readonly signal?: AbortSignal | undefined
}

/**
 * The one way anything here watches a budget (pgx's ctxwatch): from `watch()`
 * until `unwatch()`, the first of the deadline or an abort calls `onStop`
 * once. The deadline goes to the process-wide timer and the context's
 * signals to the context's shared listener, so watching costs no timer and
 * no listener of its own; only a caller's own signal gets one.
 *
 * Subclassed rather than given a callback so that a statement, the hottest
 * user, is its own watcher: no extra object or closure per statement.
 *
 * @example
 * ```ts
 * class Wait extends BudgetWatch {
 *   protected onStop(cause: StopCause): void { console.log('gave up:', cause.kind) }
 * }
 * const wait = new Wait({ deadline: now() + 100, context: currentQueryContext() })
 * wait.watch()
 * // ... later, when the work is done first:
 * wait.unwatch()
 * ```
 */
export abstract class BudgetWatch implements DeadlineWatcher, AbortWatcher {
  deadlineLink: DeadlineLink | undefined = undefined
  readonly deadline: number
  readonly #context: QueryContext | undefined
  readonly #signal: AbortSignal | undefined
  #onSignal: (() => void) | undefined
  #watching = false

  constructor(budget: WatchedBudget) {
    this.deadline = budget.deadline
    this.#context = budget.context
    this.#signal = budget.signal
  }

  /** Starts watching. Call once. */
  watch(): void {
    this.#watching = true
    if (this.deadline < Infinity) deadlineTimer.add(this)
    this.#context?.watch(this)
    const signal = this.#signal
    if (signal) {
      this.#onSignal = () => this.onAbort(signal.reason)
      signal.addEventListener('abort', this.#onSignal)
    }
  }

  /** Stops watching; true the first time, false when it had already stopped (or stopped itself). */
  unwatch(): boolean {
    if (!this.#watching) return false
    this.#watching = false
    if (this.deadlineLink) deadlineTimer.delete(this)
    this.#context?.unwatch(this)
    if (this.#onSignal) this.#signal?.removeEventListener('abort', this.#onSignal)
    return true
  }

  /** @internal The deadline timer's call. */
  onDeadline(): void {
    if (this.unwatch()) this.onStop({ kind: 'deadline' })
  }

  /** @internal A signal's call. */
  onAbort(reason: unknown): void {
    if (this.unwatch()) this.onStop({ kind: 'abort', reason })
  }

  /** The deadline passed or a signal fired; called at most once, after the watch has ended. */
  protected abstract onStop(cause: StopCause): void
}
