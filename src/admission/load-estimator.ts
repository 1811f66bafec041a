/**
 * Running estimates of how long a connection is held and how long callers wait
 * for one: exponentially weighted, so that a slow deploy shows within a few
 * dozen queries. Updated on release, read on the slow path of admission only.
 */
export class LoadEstimator {
  readonly #alpha: number
  #useMs = 0
  #waitMs = 0
  #useSamples = 0

  constructor(alpha = 0.1) {
    this.#alpha = alpha
  }

  /** Mean time a connection is held, in milliseconds (0 before any sample). */
  get meanUseMs(): number {
    return this.#useMs
  }

  /** Mean wait of the callers that had to queue, in milliseconds. */
  get meanWaitMs(): number {
    return this.#waitMs
  }

  recordUse(ms: number): void {
    this.#useMs = this.#useSamples++ === 0 ? ms : this.#useMs + this.#alpha * (ms - this.#useMs)
  }

  recordWait(ms: number): void {
    this.#waitMs = this.#waitMs === 0 ? ms : this.#waitMs + this.#alpha * (ms - this.#waitMs)
  }

  /**
   * Predicted wait for a caller with `ahead` callers served before it, when
   * all `max` connections are busy: connections free up at about
   * `max / meanUse` per millisecond.
   */
  predictWaitMs(ahead: number, max: number): number {
    return ((ahead + 1) * this.#useMs) / max
  }
}
