import { now } from './monotonic-clock.js'

/** An operation with a deadline on the monotonic clock. */
export interface DeadlineWatcher {
  readonly deadline: number
  onDeadline(): void
  /** The timer's bookkeeping: the watcher's place in its list. Start it as `undefined`. */
  deadlineLink: DeadlineLink | undefined
}

/** A watcher's place in the timer's list. */
export interface DeadlineLink {
  readonly watcher: DeadlineWatcher
  prev: DeadlineLink | undefined
  next: DeadlineLink | undefined
}

type Link = DeadlineLink

/**
 * One timer for every deadline in the process. Operations register while they
 * wait or run and leave when they settle; the timer is armed for the earliest
 * deadline and only re-armed when a sooner one arrives. Registrations form an
 * intrusive list (O(1) in and out, no hashing on the query path); the list
 * holds only operations in flight, bounded by pool size plus waiters, so a scan
 * when the timer fires costs less than keeping a heap in order on every query.
 */
export class DeadlineTimer {
  #head: Link | undefined
  #tail: Link | undefined
  #timer: NodeJS.Timeout | undefined
  #armedFor = Infinity

  add(watcher: DeadlineWatcher): void {
    const link: Link = { watcher, prev: this.#tail, next: undefined }
    if (this.#tail) this.#tail.next = link
    else this.#head = link
    this.#tail = link
    watcher.deadlineLink = link
    if (watcher.deadline < this.#armedFor) this.#arm(watcher.deadline)
  }

  delete(watcher: DeadlineWatcher): void {
    const link = watcher.deadlineLink
    if (!link) return
    watcher.deadlineLink = undefined
    this.#unlink(link)
  }

  #unlink(link: Link): void {
    if (link.prev) link.prev.next = link.next
    else this.#head = link.next
    if (link.next) link.next.prev = link.prev
    else this.#tail = link.prev
    link.prev = undefined
    link.next = undefined
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
    for (let link = this.#head; link; ) {
      const following = link.next
      const { watcher } = link
      if (watcher.deadline <= t) {
        expired.push(watcher)
        watcher.deadlineLink = undefined
        this.#unlink(link)
      } else if (watcher.deadline < next) {
        next = watcher.deadline
      }
      link = following
    }
    for (const watcher of expired) watcher.onDeadline()
    if (next < Infinity && next < this.#armedFor) this.#arm(next)
  }
}

/** The process-wide timer. */
export const deadlineTimer = new DeadlineTimer()
