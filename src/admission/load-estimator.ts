import { now } from '../context/monotonic-clock.js'

/** Samples in a row, all far below the mean, that are taken as a change of regime (a fault that healed). */
export const REGIME_RUN = 8
/** "Far below": under this fraction of the mean. */
const REGIME_FRACTION = 1 / 4
/** After a quiet spell, the next sample weighs 1 - e^(-gap / this): evidence this old is mostly forgotten. */
export const STALE_AFTER_MS = 5_000
/**
 * Hold times the mean must have taken in (since the pool started, or since
 * the server came back) before the gate refuses work on it as infeasible: one
 * or two slow first queries (cold caches after a restart, a first connect)
 * would otherwise refuse critical work for a few dozen queries.
 */
export const CONFIDENT_AFTER = 16

/**
 * Running estimates of how long a connection is held and how long callers wait
 * for one: exponentially weighted, so that a slow deploy shows within a few
 * dozen queries. Updated on release, read on the slow path of admission only.
 *
 * Figures from a network fault must not refuse work after it heals (a pool
 * whose queries took 2 s during a latency spike would otherwise predict 2 s
 * for the next few dozen, and shed them as infeasible). So each mean forgets
 * faster in two cases:
 * - a run of {@link REGIME_RUN} samples in a row, every one below a quarter
 *   of the mean, is a change of regime: the mean restarts from their average;
 * - a sample below the mean after a quiet spell weighs at least
 *   `1 - e^(-gap / 5 s)`, so high figures from before a long pause count for little.
 * Rising is unchanged (α per sample, whatever the gap): a slowdown is believed as before.
 * And it is not {@link LoadEstimator.confident} before {@link CONFIDENT_AFTER}
 * samples, from the start and again after {@link LoadEstimator.recovered}.
 *
 * @example
 * ```ts
 * const estimator = new LoadEstimator()
 * estimator.recordUse(2_000) // during a fault
 * for (let i = 0; i < 8; i++) estimator.recordUse(1) // healed
 * estimator.meanUseMs // 1
 * ```
 */
export class LoadEstimator {
  readonly #use: DecayingMean
  readonly #wait: DecayingMean

  /** `clock` is the monotonic clock in milliseconds; tests pass a fake one. */
  constructor(alpha = 0.1, clock: () => number = now) {
    this.#use = new DecayingMean(alpha, clock)
    this.#wait = new DecayingMean(alpha, clock)
  }

  /** Mean time a connection is held, in milliseconds (0 before any sample). */
  get meanUseMs(): number {
    return this.#use.value
  }

  /** Whether the hold-time mean has seen enough since it started or the server came back to refuse work on it. */
  get confident(): boolean {
    return this.#use.samples >= CONFIDENT_AFTER
  }

  /**
   * The server is back after an outage (the circuit closed): what was learned
   * before is another regime. The means keep their value (a hint for
   * retry-after) until the next sample replaces it, and count their samples
   * anew.
   */
  recovered(): void {
    this.#use.restart()
    this.#wait.restart()
  }

  /** Mean wait of the callers that had to queue, in milliseconds. */
  get meanWaitMs(): number {
    return this.#wait.value
  }

  recordUse(ms: number): void {
    this.#use.record(ms)
  }

  recordWait(ms: number): void {
    this.#wait.record(ms)
  }

  /**
   * Predicted wait for a caller with `ahead` callers served before it, when
   * all `max` connections are busy: connections free up at about
   * `max / meanUse` per millisecond.
   */
  predictWaitMs(ahead: number, max: number): number {
    return ((ahead + 1) * this.#use.value) / max
  }
}

/** One exponentially weighted mean with the two recovery rules above. */
class DecayingMean {
  readonly #alpha: number
  readonly #clock: () => number
  value = 0
  samples = 0
  #lastAt = 0
  /** The current run of samples far below the mean: how many, and their sum. */
  #lowRun = 0
  #lowSum = 0

  constructor(alpha: number, clock: () => number) {
    this.#alpha = alpha
    this.#clock = clock
  }

  /** Counts from zero again; the next sample becomes the value. */
  restart(): void {
    this.samples = 0
    this.#lowRun = this.#lowSum = 0
  }

  record(ms: number): void {
    const at = this.#clock()
    if (this.samples++ === 0) {
      this.value = ms
      this.#lastAt = at
      return
    }
    const gap = at - this.#lastAt
    this.#lastAt = at
    if (ms < this.value * REGIME_FRACTION) {
      this.#lowRun++
      this.#lowSum += ms
      if (this.#lowRun >= REGIME_RUN) {
        this.value = this.#lowSum / this.#lowRun
        this.#lowRun = this.#lowSum = 0
        return
      }
    } else {
      this.#lowRun = this.#lowSum = 0
    }
    // Only old high figures are forgotten faster: a rise is believed at the usual rate, gap or not
    // (during a slowdown releases come seldom, and each would otherwise weigh more).
    const weight = ms < this.value ? Math.max(this.#alpha, 1 - Math.exp(-gap / STALE_AFTER_MS)) : this.#alpha
    this.value += weight * (ms - this.value)
  }
}
