import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { AdmissionGate } from '../../src/admission/admission-gate.js'
import { resolveAdmissionPolicy, type AdmissionOptions } from '../../src/admission/admission-policy.js'
import { CapacityCeiling } from '../../src/admission/capacity-ceiling.js'
import { CircuitBreaker, type CircuitBreakerOptions, type CircuitState } from '../../src/admission/circuit-breaker.js'
import { LoadEstimator } from '../../src/admission/load-estimator.js'
import { LoadShedError } from '../../src/errors/load-shed-error.js'
import { ticket } from '../support/admission-ticket.js'

// The gate's probe queue, its timer and the process-wide deadline timer read the
// monotonic clock: put it on the fake Date, which advances with the fake timers
// (see admission-gate.unit.test.ts; vitest hoists mocks per file).
vi.mock('../../src/context/monotonic-clock.js', () => ({
  now: () => Date.now(),
  monotonicFromWallClock: (epochMs: number) => epochMs,
}))
beforeAll(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] })
})
afterAll(() => {
  vi.useRealTimers()
})

function setup(options: { admission?: AdmissionOptions; circuit?: CircuitBreakerOptions; waitForRecovery?: boolean } = {}) {
  const states: CircuitState[] = []
  const breaker = new CircuitBreaker({ failureThreshold: 1, ...options.circuit }, (state) => states.push(state))
  const max = 10
  const gate = new AdmissionGate(max, resolveAdmissionPolicy(options.admission ?? {}), new LoadEstimator(), breaker, new CapacityCeiling(max), options.waitForRecovery)
  return { gate, breaker, states }
}


function watch(promise: Promise<void>): { readonly state: () => 'pending' | 'granted' | 'rejected'; readonly error: () => any; readonly order: () => number } {
  let state: 'pending' | 'granted' | 'rejected' = 'pending'
  let error: unknown
  let order = -1
  promise.then(
    () => {
      state = 'granted'
      order = settledSoFar++
    },
    (e: unknown) => {
      state = 'rejected'
      error = e
      order = settledSoFar++
    },
  )
  return { state: () => state, error: () => error, order: () => order }
}
let settledSoFar = 0

const flush = (): Promise<void> => new Promise((resolve) => queueMicrotask(resolve))

describe('AdmissionGate: callers held for the breaker\'s probe (issue 12: no failures after a reset heals)', () => {
  it('gives the probe, when it comes due, to the most critical waiter, without a caller to take it', async () => {
    const { gate, breaker, states } = setup()
    breaker.recordFailure()
    const sheddable = watch(gate.acquire(ticket('sheddable', 1_000)))
    const critical = watch(gate.acquire(ticket('critical', 1_000)))
    await vi.advanceTimersByTimeAsync(49)
    expect([sheddable.state(), critical.state(), gate.waiting]).toEqual(['pending', 'pending', 2])
    await vi.advanceTimersByTimeAsync(1)
    expect([critical.state(), sheddable.state()]).toEqual(['granted', 'pending'])
    expect(states).toEqual(['open', 'half_open'])
    expect([gate.inUse, gate.waiting]).toEqual([1, 1])
    breaker.recordSuccess()
    await flush()
    expect(sheddable.state()).toBe('granted')
    expect([gate.inUse, gate.waiting]).toEqual([2, 0])
  })

  it('admits the waiters of a successful probe best first, each judged for load as if it had just arrived', async () => {
    const { gate, breaker } = setup({ admission: { feasibility: false, utilisationThresholds: { sheddable: 0.3, sheddable_plus: null, critical: null } } })
    breaker.recordFailure()
    await vi.advanceTimersByTimeAsync(50)
    await gate.acquire(ticket('critical_plus', 1_000)) // the probe
    const waiters = [
      watch(gate.acquire(ticket('sheddable', 1_000))),
      watch(gate.acquire(ticket('sheddable', 1_000))),
      watch(gate.acquire(ticket('critical', 1_000))),
      watch(gate.acquire(ticket('sheddable', 1_000))),
    ]
    breaker.recordSuccess()
    await flush()
    // critical first; then sheddable up to its 0.3 threshold of 10 (2 admitted: 1 + 1 + 1 = 3 in use), the rest refused for load.
    expect(waiters.map((w) => w.state())).toEqual(['granted', 'rejected', 'granted', 'rejected'])
    expect(waiters[2]?.order()).toBeLessThan(waiters[0]?.order() as number)
    expect(waiters[1]?.error()).toMatchObject({ reason: 'utilisation', criticality: 'sheddable' })
    expect([gate.inUse, gate.waiting]).toEqual([3, 0])
  })

  it('a waiter that gives up leaves at once, and the last one to leave takes the queue\'s timer with it', async () => {
    const { gate, breaker } = setup()
    breaker.recordFailure()
    await vi.advanceTimersByTimeAsync(50)
    await gate.acquire(ticket('critical_plus')) // the probe, out until its lease ends
    const controller = new AbortController()
    const aborted = watch(gate.acquire(ticket('critical', 1_000, controller.signal)))
    const expiring = watch(gate.acquire(ticket('critical', 30)))
    expect(gate.waiting).toBe(2)
    controller.abort(new Error('client went away'))
    await flush()
    expect([aborted.state(), gate.waiting]).toEqual(['rejected', 1])
    await vi.advanceTimersByTimeAsync(30)
    expect([expiring.state(), gate.waiting]).toEqual(['rejected', 0])
    expect(aborted.error()).toMatchObject({ code: 'QUERY_CANCELED', phase: 'waiting' })
    expect(expiring.error()).toMatchObject({ code: 'DEADLINE_EXCEEDED', phase: 'waiting' })
    expect(vi.getTimerCount()).toBe(0)
    expect(gate.inUse).toBe(1)
  })

  it('with waitForRecovery, the waiters of a failed probe wait for the next one while their deadline allows', async () => {
    const { gate, breaker, states } = setup({ waitForRecovery: true })
    breaker.recordFailure()
    await vi.advanceTimersByTimeAsync(50)
    await gate.acquire(ticket('critical_plus')) // the probe
    const short = watch(gate.acquire(ticket('critical', 45)))
    const long = watch(gate.acquire(ticket('critical', 1_000)))
    await vi.advanceTimersByTimeAsync(10)
    gate.release()
    // The probe went at 50 ms and failed at 60: the next one is due 50 ms after it went, after `short`'s deadline.
    breaker.recordFailure()
    await flush()
    expect(short.error()).toMatchObject({ reason: 'circuit_open', retryAfterMs: 50 }) // 40 ms, at least the 50 ms floor
    expect(long.state()).toBe('pending')
    await vi.advanceTimersByTimeAsync(40)
    expect(long.state()).toBe('granted')
    expect(states).toEqual(['open', 'half_open', 'open', 'half_open'])
  })

  it("a probe that fails long after it went (its connect hung through a fault) refuses nobody: the next one goes at once to the best waiter", async () => {
    const { gate, breaker, states } = setup({ circuit: { resetAfterMs: 5_000 } })
    breaker.recordFailure()
    await vi.advanceTimersByTimeAsync(50)
    await gate.acquire(ticket('critical')) // the probe, whose connect hangs
    const held = watch(gate.acquire(ticket('critical', 5_000)))
    const plus = watch(gate.acquire(ticket('critical_plus', 5_000)))
    await vi.advanceTimersByTimeAsync(2_000)
    gate.release()
    breaker.recordFailure() // after the heal, 2 s after it went: it tells of the server as it was then
    await flush()
    expect(breaker.retryAfterMs).toBe(0)
    expect([held.state(), plus.state()]).toEqual(['pending', 'granted'])
    breaker.recordSuccess()
    await flush()
    expect(held.state()).toBe('granted')
    expect(states).toEqual(['open', 'half_open', 'open', 'half_open', 'closed'])
  })

  it('a probe given back (a kept connection served it) goes to the next waiter at once; a lost one when its lease ends', async () => {
    const { gate, breaker } = setup({ circuit: { resetAfterMs: 500 } })
    breaker.recordFailure()
    await vi.advanceTimersByTimeAsync(50)
    await gate.acquire(ticket('critical'))
    const first = watch(gate.acquire(ticket('critical', 5_000)))
    const second = watch(gate.acquire(ticket('critical', 5_000)))
    breaker.releaseProbe()
    await flush()
    expect([first.state(), second.state()]).toEqual(['granted', 'pending'])
    // `first` never reports: after the lease (resetAfterMs) the probe is presumed lost and goes to `second`.
    await vi.advanceTimersByTimeAsync(499)
    expect(second.state()).toBe('pending')
    await vi.advanceTimersByTimeAsync(1)
    expect(second.state()).toBe('granted')
    expect(breaker.state).toBe('half_open')
  })

  it('holds at most maxWaiting callers (critical_plus always), and the pool closing fails them', async () => {
    const { gate, breaker } = setup({ admission: { maxWaiting: 2 } })
    breaker.recordFailure()
    const held = [watch(gate.acquire(ticket('critical', 1_000))), watch(gate.acquire(ticket('critical', 1_000)))]
    const refused = await gate.acquire(ticket('critical', 1_000)).catch((error: unknown) => error)
    expect(refused).toBeInstanceOf(LoadShedError)
    expect(refused).toMatchObject({ reason: 'circuit_open' })
    const plus = watch(gate.acquire(ticket('critical_plus', 1_000)))
    expect(gate.waiting).toBe(3)
    gate.rejectAll(new Error('pool closed'))
    await flush()
    expect([...held, plus].map((w) => w.error()?.message)).toEqual(['pool closed', 'pool closed', 'pool closed'])
    expect(gate.waiting).toBe(0)
    await vi.advanceTimersByTimeAsync(100)
    expect(breaker.state).toBe('open')
  })
})
