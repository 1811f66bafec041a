import { now } from './monotonic-clock.js'

/** An operation with a deadline on the monotonic clock. */
export interface DeadlineWatcher {
  readonly deadline: number
  onDeadline(): void
}

/**
 * One timer for every deadline in the process. Queries register while they wait
 * or run and leave when they settle; the timer is armed for the earliest
 * deadline and only re-armed when a sooner one arrives. The watched set holds
 * only operations in flight (bounded by pool size plus waiters), so a scan on
 * each firing is cheaper than keeping a heap in order on every query.
 */
export class DeadlineTimer {
  readonly #watchers = new Set<DeadlineWatcher>()
  #timer: NodeJS.Timeout | undefined
  #armedFor = Infinity

  add(watcher: DeadlineWatcher): void {
    this.#watchers.add(watcher)
    if (watcher.deadline < this.#armedFor) this.#arm(watcher.deadline)
  }

  delete(watcher: DeadlineWatcher): void {
    this.#watchers.delete(watcher)
  }

  #arm(deadline: number): void {
    if (this.#timer) clearTimeout(this.#timer)
    this.#armedFor = deadline
    this.#timer = setTimeout(this.#fire, Math.max(0, Math.ceil(deadline - now())))
    this.#timer.unref()
  }

  readonly #fire = (): void => {
    this.#timer = undefined
    this.#armedFor = Infinity
    const t = now()
    let next = Infinity
    const expired: DeadlineWatcher[] = []
    for (const watcher of this.#watchers) {
      if (watcher.deadline <= t) expired.push(watcher)
      else if (watcher.deadline < next) next = watcher.deadline
    }
    for (const watcher of expired) {
      this.#watchers.delete(watcher)
      watcher.onDeadline()
    }
    if (next < Infinity && next < this.#armedFor) this.#arm(next)
  }
}

/** The process-wide timer. */
export const deadlineTimer = new DeadlineTimer()
