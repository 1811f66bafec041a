import { now } from '../context/monotonic-clock.js'
import { InvalidOptionError } from '../errors/invalid-option-error.js'

/**
 * `closed`: normal; `open`: failing fast; `half_open`: one probe is let through.
 *
 * @example
 * ```ts
 * dialect.events.on('circuit', (state: CircuitState) => console.log('circuit', state))
 * ```
 */
export type CircuitState = 'closed' | 'open' | 'half_open'

/**
 * Options of the breaker on connection-level failures.
 *
 * @example
 * ```ts
 * const circuit: CircuitBreakerOptions = { failureThreshold: 5, resetAfterMs: 2_000 }
 * ```
 */
export interface CircuitBreakerOptions {
  /** Consecutive connection failures that open the circuit. Default 5; 0 disables the breaker. */
  readonly failureThreshold?: number | undefined
  /** How long it stays open before letting a probe through. Default 2000 ms. */
  readonly resetAfterMs?: number | undefined
}

/**
 * A small breaker, kept on our side rather than cockatiel's because admission
 * asks it a synchronous question on every query (`allows()`), and only
 * connection-level failures, reported by the driver, move it.
 */
export class CircuitBreaker {
  readonly #threshold: number
  readonly #resetAfterMs: number
  readonly #onChange: (state: CircuitState) => void
  #state: CircuitState = 'closed'
  #failures = 0
  #openedAt = 0
  #probing = false

  constructor(options: CircuitBreakerOptions = {}, onChange: (state: CircuitState) => void = () => {}) {
    const { failureThreshold = 5, resetAfterMs = 2_000 } = options
    if (!Number.isInteger(failureThreshold) || failureThreshold < 0) {
      throw new InvalidOptionError('circuitBreaker.failureThreshold', `must be a whole number >= 0; got ${String(failureThreshold)}`)
    }
    if (!Number.isFinite(resetAfterMs) || resetAfterMs <= 0) {
      throw new InvalidOptionError('circuitBreaker.resetAfterMs', `must be a positive number of milliseconds; got ${String(resetAfterMs)}`)
    }
    this.#threshold = failureThreshold
    this.#resetAfterMs = resetAfterMs
    this.#onChange = onChange
  }

  get state(): CircuitState {
    if (this.#state === 'open' && now() - this.#openedAt >= this.#resetAfterMs) return 'half_open'
    return this.#state
  }

  /** Milliseconds until a probe will be let through, 0 when not open. */
  get retryAfterMs(): number {
    return this.#state === 'open' ? Math.max(0, Math.ceil(this.#resetAfterMs - (now() - this.#openedAt))) : 0
  }

  /**
   * Whether a connection attempt may go ahead. While half open, exactly one
   * caller is let through as the probe; the rest fail fast until it reports.
   */
  allows(): boolean {
    if (this.#state === 'closed') return true
    if (this.#probing || now() - this.#openedAt < this.#resetAfterMs) return false
    this.#probing = true
    this.#set('half_open')
    return true
  }

  recordSuccess(): void {
    this.#failures = 0
    this.#probing = false
    if (this.#state !== 'closed') this.#set('closed')
  }

  recordFailure(): void {
    if (this.#threshold === 0) return
    this.#failures++
    if (this.#probing || this.#failures >= this.#threshold) {
      this.#probing = false
      this.#openedAt = now()
      if (this.#state !== 'open') this.#set('open')
    }
  }

  #set(state: CircuitState): void {
    this.#state = state
    this.#onChange(state)
  }
}

/**
 * Whether an error means the server could not be reached or refused the
 * session, as opposed to a failing statement.
 */
export function isConnectionFailure(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code
  if (typeof code === 'string') {
    if (code.startsWith('08')) return true // connection exception
    if (code === '53300' || code === '57P01' || code === '57P02' || code === '57P03' || code === '28000' || code === '28P01') return true
    if (['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH', 'EPIPE', 'EAI_AGAIN'].includes(code)) return true
  }
  const message = error instanceof Error ? error.message : ''
  return /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error/.test(message)
}
