import { describe, expect, it } from 'vitest'
import { LoadEstimator, REGIME_RUN } from '../../src/admission/load-estimator.js'

function fakeClock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000
  return { now: () => t, advance: (ms) => (t += ms) }
}

describe('LoadEstimator: figures from a fault do not outlive it', () => {
  it('a run of fast samples after a slow spell is a change of regime: the mean restarts from them', () => {
    const clock = fakeClock()
    const estimator = new LoadEstimator(0.1, clock.now)
    for (let i = 0; i < 30; i++) {
      clock.advance(500)
      estimator.recordUse(2_000)
    }
    expect(estimator.meanUseMs).toBeCloseTo(2_000)
    for (let i = 0; i < REGIME_RUN - 1; i++) {
      clock.advance(1)
      estimator.recordUse(1)
    }
    // Still believing part of the fault one sample before the run completes...
    expect(estimator.meanUseMs).toBeGreaterThan(500)
    clock.advance(1)
    estimator.recordUse(1)
    // ...and not after it: 2 s predicted would shed queries with a 1.5 s deadline.
    expect(estimator.meanUseMs).toBe(1)
  })

  it('a steady mix of fast and slow queries is not mistaken for a change of regime', () => {
    const clock = fakeClock()
    const estimator = new LoadEstimator(0.1, clock.now)
    for (let i = 0; i < 400; i++) {
      clock.advance(2)
      estimator.recordUse(i % 3 === 0 ? 100 : 1)
    }
    // The true mean is 34: the estimate stays near it (a reset would bring it near 1).
    expect(estimator.meanUseMs).toBeGreaterThan(20)
    expect(estimator.meanUseMs).toBeLessThan(50)
  })

  it('evidence from before a quiet spell counts for little', () => {
    const clock = fakeClock()
    const estimator = new LoadEstimator(0.1, clock.now)
    estimator.recordUse(2_000)
    estimator.recordWait(1_500)
    clock.advance(10_000)
    estimator.recordUse(1)
    estimator.recordWait(1)
    expect(estimator.meanUseMs).toBeLessThan(2_000 * Math.exp(-2) + 1)
    expect(estimator.meanWaitMs).toBeLessThan(1_500 * Math.exp(-2) + 1)
  })

  it('a slowdown is believed as before: α per sample on the way up', () => {
    const clock = fakeClock()
    const estimator = new LoadEstimator(0.1, clock.now)
    estimator.recordUse(1)
    // Releases come seldom during a slowdown: the gap does not make a slow sample weigh more.
    clock.advance(2_000)
    estimator.recordUse(2_001)
    expect(estimator.meanUseMs).toBeCloseTo(201)
    expect(estimator.predictWaitMs(3, 4)).toBeCloseTo(201)
  })
})
