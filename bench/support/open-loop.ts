export { seededRandom } from '../../test/support/seeded-random.js'
/**
 * Open-loop load: requests start at a fixed rate whatever happens to the ones
 * already running (a closed loop slows down with the system under test and so
 * hides an overload; see "coordinated omission").
 */
import { summarize } from './stats.js'

/** How closely the schedule was kept. */
export interface OpenLoopResult {
  /** performance.now() of the first scheduled arrival. */
  readonly startedAt: number
  readonly fired: number
  /** Start delay behind the schedule, in ms: p50, p99, max. */
  readonly lagP50Ms: number
  readonly lagP99Ms: number
  readonly lagMaxMs: number
}

/**
 * Calls `fire(index, scheduledAt)` for index 0..total-1 at `rate` per second,
 * scheduledAt = start + index / rate (performance.now() milliseconds). A
 * late timer fires every arrival already due at once, so the rate holds on
 * average even when the event loop stalls; the lag is reported. `fire` must
 * not throw (an exception is reported and counted as a fired arrival).
 */
export function fixedRateArrivals(rate: number, total: number, fire: (index: number, scheduledAt: number) => void): Promise<OpenLoopResult> {
  if (!(rate > 0) || !Number.isInteger(total) || total < 0) throw new Error(`fixedRateArrivals: bad rate ${rate} or total ${total}`)
  const intervalMs = 1000 / rate
  const startedAt = performance.now() + 5
  const lags = new Float64Array(total)
  let next = 0
  return new Promise((resolve) => {
    const finish = (): void => {
      const summary = summarize(lags)
      resolve({ startedAt, fired: next, lagP50Ms: summary.p50, lagP99Ms: summary.p99, lagMaxMs: summary.max })
    }
    const tick = (): void => {
      while (next < total) {
        const due = startedAt + next * intervalMs
        const t = performance.now()
        if (due > t) break
        lags[next] = t - due
        try {
          fire(next, due)
        } catch (error) {
          console.error(`[open-loop] arrival ${next} threw:`, error)
        }
        next++
      }
      if (next >= total) {
        finish()
        return
      }
      setTimeout(tick, Math.max(0, startedAt + next * intervalMs - performance.now()))
    }
    if (total === 0) finish()
    else setTimeout(tick, Math.max(0, startedAt - performance.now()))
  })
}

