import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { AdmissionGate } from '../../src/admission/admission-gate.js'
import { resolveAdmissionPolicy, type AdmissionOptions } from '../../src/admission/admission-policy.js'
import { CircuitBreaker, type CircuitBreakerOptions, type CircuitState } from '../../src/admission/circuit-breaker.js'
import { CONFIDENT_AFTER, LoadEstimator } from '../../src/admission/load-estimator.js'
import { CRITICALITIES, criticalityRank, type Criticality } from '../../src/context/criticality.js'
import { DeadlineExceededError } from '../../src/errors/deadline-exceeded-error.js'
import { LoadShedError } from '../../src/errors/load-shed-error.js'
import { QueryCanceledError } from '../../src/errors/query-canceled-error.js'
import { ticket } from '../support/admission-ticket.js'

// The gate, its waiters and the process-wide deadline timer read the monotonic
// clock from node:perf_hooks, which vitest's fake `performance` does not
// replace: put that clock on the fake Date, which advances with the fake timers.
vi.mock('../../src/context/monotonic-clock.js', () => ({
  now: () => Date.now(),
  monotonicFromWallClock: (epochMs: number) => epochMs,
}))

// Fake timers for the whole file: the deadline timer is a singleton, and one
// armed on a fake clock must keep running on it.
beforeAll(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] })
})
afterAll(() => {
  vi.useRealTimers()
})

const NO_THRESHOLDS: AdmissionOptions['utilisationThresholds'] = { sheddable: null, sheddable_plus: null, critical: null }

interface Setup {
  readonly gate: AdmissionGate
  readonly estimator: LoadEstimator
  readonly breaker: CircuitBreaker
  readonly states: CircuitState[]
}

function setup(max: number, admission: AdmissionOptions = {}, circuit: CircuitBreakerOptions = {}): Setup {
  const estimator = new LoadEstimator()
  const states: CircuitState[] = []
  const breaker = new CircuitBreaker(circuit, (state) => states.push(state))
  return { gate: new AdmissionGate(max, resolveAdmissionPolicy(admission), estimator, breaker), estimator, breaker, states }
}


/** Takes `count` permits on the slow path as critical_plus, which is never shed. */
async function fill(gate: AdmissionGate, count: number): Promise<void> {
  for (let i = 0; i < count; i++) await gate.acquire(ticket('critical_plus'))
}

/** Settles a promise into its error, failing the test if it resolved. */
async function rejectionOf(promise: Promise<unknown>): Promise<any> {
  return promise.then(
    () => {
      throw new Error('expected a rejection')
    },
    (error: unknown) => error,
  )
}

/** Tracks whether a promise has settled, and how. */
function watch(promise: Promise<void>): { readonly state: () => 'pending' | 'granted' | 'rejected'; readonly error: () => unknown } {
  let state: 'pending' | 'granted' | 'rejected' = 'pending'
  let error: unknown
  promise.then(
    () => (state = 'granted'),
    (e: unknown) => {
      state = 'rejected'
      error = e
    },
  )
  return { state: () => state, error: () => error }
}

const flush = (): Promise<void> => new Promise((resolve) => queueMicrotask(resolve))

describe('AdmissionGate: utilisation thresholds (defaults: sheddable 0.8, sheddable_plus 0.9, critical never)', () => {
  it('refuses each level from its threshold on, the lower levels first, critical and critical_plus never', async () => {
    const { gate } = setup(10, { feasibility: false })
    await fill(gate, 7)
    expect(gate.sheddingLevel).toBeUndefined()
    await gate.acquire(ticket('sheddable')) // 7/10 below 0.8
    expect(gate.sheddingLevel).toBe('sheddable')
    const refused = await rejectionOf(gate.acquire(ticket('sheddable'))) // 8/10
    expect(refused).toBeInstanceOf(LoadShedError)
    expect(refused).toMatchObject({ reason: 'utilisation', criticality: 'sheddable', retryAfterMs: 50 })
    await gate.acquire(ticket('sheddable_plus'))
    expect(gate.sheddingLevel).toBe('sheddable_plus')
    expect(await rejectionOf(gate.acquire(ticket('sheddable_plus')))).toMatchObject({ reason: 'utilisation', criticality: 'sheddable_plus' })
    await gate.acquire(ticket('critical'))
    expect(gate.inUse).toBe(10)
    // Full: critical and critical_plus wait rather than being refused.
    const critical = watch(gate.acquire(ticket('critical')))
    const plus = watch(gate.acquire(ticket('critical_plus')))
    expect(gate.waiting).toBe(2)
    gate.release()
    gate.release()
    await flush()
    expect([plus.state(), critical.state()]).toEqual(['granted', 'granted'])
  })

  it('counts waiters in utilisation, and the retry hint follows the mean use', async () => {
    const { gate, estimator } = setup(10, { feasibility: false, utilisationThresholds: { sheddable: 0.5, sheddable_plus: null, critical: null } })
    estimator.recordUse(120)
    await fill(gate, 10)
    const waiters = Array.from({ length: 5 }, () => watch(gate.acquire(ticket('critical'))))
    expect(gate.utilisation).toBe(1.5)
    expect(await rejectionOf(gate.acquire(ticket('sheddable')))).toMatchObject({ reason: 'utilisation', retryAfterMs: 120 })
    gate.rejectAll(new Error('done'))
    await flush()
    expect(waiters.every((w) => w.state() === 'rejected')).toBe(true)
  })

  it('takes the fast paths only below the thresholds', async () => {
    const { gate } = setup(10)
    for (let i = 0; i < 8; i++) expect(gate.tryAcquire()).toBe(true)
    // 8/10: tryAcquire no longer admits without a criticality; tryAcquireFor by level.
    expect(gate.tryAcquire()).toBe(false)
    expect(gate.tryAcquireFor(criticalityRank('sheddable'))).toBe(false)
    expect(gate.tryAcquireFor(criticalityRank('sheddable_plus'))).toBe(true)
    expect(gate.tryAcquireFor(criticalityRank('sheddable_plus'))).toBe(false)
    expect(gate.tryAcquireFor(criticalityRank('critical'))).toBe(true)
    expect(gate.inUse).toBe(10)
    expect(gate.tryAcquireFor(criticalityRank('critical_plus'))).toBe(false)
  })
})

describe('AdmissionGate: bounded queue', () => {
  it('sheds with reason queue once maxWaiting callers wait, except critical_plus', async () => {
    const { gate } = setup(1, { maxWaiting: 2, utilisationThresholds: NO_THRESHOLDS, feasibility: false })
    await fill(gate, 1)
    const waiters = [watch(gate.acquire(ticket('critical'))), watch(gate.acquire(ticket('sheddable')))]
    expect(gate.waiting).toBe(2)
    expect(await rejectionOf(gate.acquire(ticket('critical')))).toMatchObject({ reason: 'queue', criticality: 'critical' })
    const plus = watch(gate.acquire(ticket('critical_plus')))
    expect(gate.waiting).toBe(3)
    gate.rejectAll(new Error('done'))
    await flush()
    expect([...waiters, plus].map((w) => w.state())).toEqual(['rejected', 'rejected', 'rejected'])
    expect(gate.waiting).toBe(0)
  })
})

describe('AdmissionGate: deadline feasibility', () => {
  it('refuses at once work whose predicted wait and run exceed its budget; work that fits queues; critical_plus waits out its deadline', async () => {
    const { gate, estimator } = setup(2)
    for (let i = 0; i < CONFIDENT_AFTER; i++) estimator.recordUse(200)
    await fill(gate, 2)
    const refused = await rejectionOf(gate.acquire(ticket('critical', 150)))
    // One ahead (itself) at 200 ms per connection over 2 connections, plus its own run: 300 ms.
    expect(refused).toMatchObject({ reason: 'deadline', criticality: 'critical', retryAfterMs: 300 })
    expect(gate.waiting).toBe(0)
    const fits = watch(gate.acquire(ticket('critical', 301)))
    const plus = watch(gate.acquire(ticket('critical_plus', 100)))
    expect(gate.waiting).toBe(2)
    await vi.advanceTimersByTimeAsync(100)
    expect(plus.state()).toBe('rejected')
    expect(plus.error()).toBeInstanceOf(DeadlineExceededError)
    expect(plus.error()).toMatchObject({ phase: 'waiting', budgetMs: 100, waitedMs: 100 })
    gate.release()
    await flush()
    expect(fits.state()).toBe('granted')
  })

  it('does not judge feasibility on fewer than CONFIDENT_AFTER samples: at start, and again once the server is back', async () => {
    const { gate, estimator } = setup(1)
    // One slow first query (a cold cache, a first connect) is not yet a regime.
    for (let i = 0; i < CONFIDENT_AFTER - 1; i++) estimator.recordUse(10_000)
    await fill(gate, 1)
    const early = watch(gate.acquire(ticket('critical', 50)))
    expect(gate.waiting).toBe(1)
    estimator.recordUse(10_000)
    expect(await rejectionOf(gate.acquire(ticket('critical', 50)))).toMatchObject({ reason: 'deadline' })
    // The circuit closed again after an outage: the old figures are another regime, and count for nothing until relearned.
    estimator.recovered()
    estimator.recordUse(10_000)
    const afterRecovery = watch(gate.acquire(ticket('critical', 50)))
    expect(gate.waiting).toBe(2)
    await vi.advanceTimersByTimeAsync(50)
    expect([early.error(), afterRecovery.error()]).toEqual([expect.any(DeadlineExceededError), expect.any(DeadlineExceededError)])
  })

  it('does not judge feasibility when it is off, nor before any use was measured', async () => {
    const off = setup(1, { feasibility: false })
    off.estimator.recordUse(10_000)
    await fill(off.gate, 1)
    const waiting = watch(off.gate.acquire(ticket('critical', 10)))
    const cold = setup(1)
    await fill(cold.gate, 1)
    const coldWaiting = watch(cold.gate.acquire(ticket('critical', 10)))
    expect([off.gate.waiting, cold.gate.waiting]).toEqual([1, 1])
    await vi.advanceTimersByTimeAsync(10)
    expect([waiting.error(), coldWaiting.error()]).toEqual([expect.any(DeadlineExceededError), expect.any(DeadlineExceededError)])
  })
})

describe('AdmissionGate: reserve', () => {
  it('keeps the last connections for critical and critical_plus; the rest wait for one below the reserve', async () => {
    const { gate } = setup(4, { reserve: 1, utilisationThresholds: NO_THRESHOLDS, feasibility: false })
    await fill(gate, 3)
    const sheddable = watch(gate.acquire(ticket('sheddable')))
    const sheddablePlus = watch(gate.acquire(ticket('sheddable_plus')))
    expect(gate.waiting).toBe(2)
    await gate.acquire(ticket('critical'))
    expect(gate.inUse).toBe(4)
    // Back to 3 in use: still the reserve, nobody below critical gets it.
    gate.release()
    await flush()
    expect([sheddablePlus.state(), sheddable.state(), gate.inUse]).toEqual(['pending', 'pending', 3])
    // Back to 2: the permit goes to the best waiter, which brings it back to 3.
    gate.release()
    await flush()
    expect([sheddablePlus.state(), sheddable.state(), gate.inUse]).toEqual(['granted', 'pending', 3])
    expect(() => setup(2, { reserve: 2 })).toThrow(expect.objectContaining({ option: 'admission.reserve' }))
    gate.rejectAll(new Error('done'))
  })
})

describe('AdmissionGate: priority of waiters', () => {
  it('hands each released permit to the most critical waiter, then the earliest deadline, then the first to arrive', async () => {
    const { gate, estimator } = setup(1, { utilisationThresholds: NO_THRESHOLDS, feasibility: false })
    await fill(gate, 1)
    const order: string[] = []
    const arrivals: [Criticality, number][] = [
      ['sheddable', 10_000],
      ['critical', 9_000],
      ['sheddable_plus', 10_000],
      ['critical_plus', 10_000],
      ['critical', 8_000],
      ['sheddable', 5_000],
      ['critical', 9_000],
    ]
    // All arrive at the same instant: #1 and #6 tie on level and deadline, and arrival decides.
    arrivals.forEach(([criticality, timeoutMs], index) => {
      void gate.acquire(ticket(criticality, timeoutMs)).then(() => order.push(`${criticality}@${timeoutMs}#${index}`))
    })
    expect(gate.waiting).toBe(7)
    vi.advanceTimersByTime(10)
    for (let i = 0; i < arrivals.length; i++) {
      gate.release(5)
      // One permit out all along: each release went to a waiter.
      expect(gate.inUse).toBe(1)
    }
    await flush()
    expect(order).toEqual([
      'critical_plus@10000#3',
      'critical@8000#4',
      'critical@9000#1',
      'critical@9000#6',
      'sheddable_plus@10000#2',
      'sheddable@5000#5',
      'sheddable@10000#0',
    ])
    expect(estimator.meanUseMs).toBe(5)
    expect(estimator.meanWaitMs).toBe(10)
    gate.release()
    expect([gate.inUse, gate.waiting]).toEqual([0, 0])
  })
})

describe('AdmissionGate: a waiter that gives up leaves the queue at once (invariant 7)', () => {
  it('on abort of its signal', async () => {
    const { gate } = setup(1, { utilisationThresholds: NO_THRESHOLDS, feasibility: false })
    await fill(gate, 1)
    const controller = new AbortController()
    const aborted = watch(gate.acquire(ticket('critical', Infinity, controller.signal)))
    const next = watch(gate.acquire(ticket('sheddable')))
    expect(gate.waiting).toBe(2)
    controller.abort(new Error('client went away'))
    expect(gate.waiting).toBe(1)
    gate.release()
    await flush()
    expect(aborted.error()).toBeInstanceOf(QueryCanceledError)
    expect(aborted.error()).toMatchObject({ phase: 'waiting' })
    // The permit went past the aborted waiter, to the next one.
    expect(next.state()).toBe('granted')
    expect(gate.inUse).toBe(1)
  })

  it('at its deadline, not when a connection frees up', async () => {
    const { gate } = setup(1, { utilisationThresholds: NO_THRESHOLDS, feasibility: false })
    await fill(gate, 1)
    const expiring = watch(gate.acquire(ticket('critical', 50)))
    await vi.advanceTimersByTimeAsync(49)
    expect([expiring.state(), gate.waiting]).toEqual(['pending', 1])
    await vi.advanceTimersByTimeAsync(1)
    expect([expiring.state(), gate.waiting]).toEqual(['rejected', 0])
    expect(expiring.error()).toMatchObject({ code: 'DEADLINE_EXCEEDED', phase: 'waiting' })
    gate.release()
    expect(gate.inUse).toBe(0)
  })

  it('and an abort after its grant changes nothing: the permit stays with it', async () => {
    const { gate } = setup(1, { utilisationThresholds: NO_THRESHOLDS, feasibility: false })
    await fill(gate, 1)
    const controller = new AbortController()
    const waiter = watch(gate.acquire(ticket('critical', 50, controller.signal)))
    gate.release()
    controller.abort()
    await vi.advanceTimersByTimeAsync(50)
    expect([waiter.state(), gate.inUse, gate.waiting]).toEqual(['granted', 1, 0])
  })
})

describe('AdmissionGate: circuit breaker', () => {
  it('refuses at once the callers whose deadline comes before the probe, gives the due probe to one caller, holds the rest for its outcome, and admits on the fast paths once closed', async () => {
    const { gate, breaker, states } = setup(10, {}, { failureThreshold: 2 })
    breaker.recordFailure()
    expect(gate.tryAcquire()).toBe(true) // one failure: still closed
    gate.release()
    breaker.recordFailure()
    expect(breaker.state).toBe('open')
    expect(gate.tryAcquire()).toBe(false)
    expect(gate.tryAcquireFor(0)).toBe(false)
    for (const criticality of CRITICALITIES) {
      // The probe is due in 50 ms, after these callers' 40 ms deadlines: nothing they could wait for comes in time.
      const shed = await rejectionOf(gate.acquire(ticket(criticality, 40)))
      expect(shed).toMatchObject({ reason: 'circuit_open', criticality, retryAfterMs: 50 })
    }
    vi.advanceTimersByTime(50)
    // The probe is due: one caller gets it, the circuit is half open, and every other caller waits for its outcome.
    await gate.acquire(ticket('critical', 40))
    expect(breaker.state).toBe('half_open')
    expect(gate.tryAcquire()).toBe(false)
    expect(gate.tryAcquireFor(0)).toBe(false)
    const held = CRITICALITIES.map((criticality) => watch(gate.acquire(ticket(criticality, 1_000))))
    await flush()
    expect(held.map((waiter) => waiter.state())).toEqual(['pending', 'pending', 'pending', 'pending'])
    expect([gate.inUse, gate.waiting]).toEqual([1, 4])
    // The driver reports the probe's connect: the callers held for it are admitted.
    breaker.recordSuccess()
    await flush()
    expect(held.map((waiter) => waiter.state())).toEqual(['granted', 'granted', 'granted', 'granted'])
    expect([gate.inUse, gate.waiting]).toEqual([5, 0])
    expect(gate.tryAcquire()).toBe(true)
    await gate.acquire(ticket('sheddable'))
    expect(states).toEqual(['open', 'half_open', 'closed'])
  })

  it('does not give the probe to a caller it refuses for load', async () => {
    const { gate, breaker } = setup(10, { feasibility: false }, { failureThreshold: 1 })
    await fill(gate, 9)
    breaker.recordFailure()
    vi.advanceTimersByTime(50)
    expect(await rejectionOf(gate.acquire(ticket('sheddable')))).toMatchObject({ reason: 'utilisation' })
    expect(breaker.state).toBe('open')
    await gate.acquire(ticket('critical'))
    expect(breaker.state).toBe('half_open')
  })

  it('refuses the callers held for a failed probe, with the wait until the next probe as the retry hint', async () => {
    const { gate, breaker } = setup(10, {}, { failureThreshold: 1, resetAfterMs: 20_000 })
    breaker.recordFailure()
    vi.advanceTimersByTime(10_000)
    await gate.acquire(ticket('critical'))
    const held = watch(gate.acquire(ticket('critical', 20_000)))
    breaker.recordFailure() // the probe failed at once, 10 s into the outage: the next one in a twentieth of that
    await flush()
    expect(held.error()).toMatchObject({ reason: 'circuit_open', retryAfterMs: 500 })
    expect(gate.waiting).toBe(0)
    expect(await rejectionOf(gate.acquire(ticket('critical', 400)))).toMatchObject({ reason: 'circuit_open', retryAfterMs: 500 })
  })
})
