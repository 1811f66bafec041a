import { now } from '../context/monotonic-clock.js'
import { InvalidOptionError } from '../errors/invalid-option-error.js'
import type { GovernorEvents } from '../telemetry/governor-events.js'

interface Checkout {
  readonly acquiredAt: number
  readonly stack: string
  readonly pid: number | undefined
  warned: boolean
}

/**
 * HikariCP's leakDetectionThreshold: warns, with the stack that acquired it,
 * about a connection held longer than the threshold. One interval timer scans
 * the checked-out connections; the stack is captured only when enabled.
 */
export class LeakDetector {
  readonly #thresholdMs: number
  readonly #events: GovernorEvents
  readonly #checkouts = new Map<object, Checkout>()
  #timer: NodeJS.Timeout | undefined

  constructor(thresholdMs: number, events: GovernorEvents) {
    if (!Number.isFinite(thresholdMs) || thresholdMs <= 0) {
      throw new InvalidOptionError('leakDetectionThresholdMs', `must be a positive number of milliseconds; got ${String(thresholdMs)}`)
    }
    this.#thresholdMs = thresholdMs
    this.#events = events
  }

  checkedOut(connection: object, pid: number | undefined): void {
    const holder = { stack: '' }
    Error.captureStackTrace(holder, this.checkedOut)
    this.#checkouts.set(connection, { acquiredAt: now(), stack: holder.stack.replace(/^Error\n/, ''), pid, warned: false })
    this.#timer ??= setInterval(this.#scan, Math.max(10, Math.min(1_000, this.#thresholdMs / 2))).unref()
  }

  returned(connection: object): void {
    this.#checkouts.delete(connection)
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer)
    this.#timer = undefined
    this.#checkouts.clear()
  }

  readonly #scan = (): void => {
    const t = now()
    for (const checkout of this.#checkouts.values()) {
      const heldMs = t - checkout.acquiredAt
      if (!checkout.warned && heldMs >= this.#thresholdMs) {
        checkout.warned = true
        this.#events.emit('leak', { pid: checkout.pid, heldMs, stack: checkout.stack })
      }
    }
  }
}
