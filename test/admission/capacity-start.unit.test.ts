import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { AdmissionGate } from '../../src/admission/admission-gate.js'
import { resolveAdmissionPolicy } from '../../src/admission/admission-policy.js'
import { CapacityCeiling, FIRST_CAPACITY_PROBE_MS, MAX_CAPACITY_PROBE_MS, STARTING_CONNECTS } from '../../src/admission/capacity-ceiling.js'
import { CircuitBreaker } from '../../src/admission/circuit-breaker.js'
import { LoadEstimator } from '../../src/admission/load-estimator.js'
import { criticalityRank } from '../../src/context/criticality.js'
import { ticket } from '../support/admission-ticket.js'

// As in capacity.unit.test.ts: the monotonic clock on the fake Date (vitest hoists mocks per file).
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

function startingGate(max: number): AdmissionGate {
  return new AdmissionGate(max, resolveAdmissionPolicy({ feasibility: false }), new LoadEstimator(), new CircuitBreaker(), new CapacityCeiling(max, Date.now, true))
}


function watch(promise: Promise<void>): () => 'pending' | 'granted' | 'rejected' {
  let state: 'pending' | 'granted' | 'rejected' = 'pending'
  promise.then(
    () => (state = 'granted'),
    () => (state = 'rejected'),
  )
  return () => state
}

const flush = async (): Promise<void> => {
  await vi.advanceTimersByTimeAsync(0)
}

describe('CapacityCeiling starting (one of several instances, before it knows its share)', () => {
  it('opens one connection at a time, follows what it holds, and is unbounded once the limits say the fleet fits', () => {
    expect(STARTING_CONNECTS).toBe(1)
    const ceiling = new CapacityCeiling(10, () => 0, true)
    expect([ceiling.starting, ceiling.capped, ceiling.ceiling, ceiling.limit(), ceiling.probeAt]).toEqual([true, true, 10, 1, Infinity])
    expect(ceiling.connected(1)).toBe(true)
    expect(ceiling.limit()).toBe(2)
    expect(ceiling.connected(1)).toBe(false) // nothing new
    ceiling.gaveBack(0)
    expect(ceiling.limit()).toBe(1)
    ceiling.started()
    expect([ceiling.starting, ceiling.capped, ceiling.limit()]).toEqual([false, false, 10])
  })

  it('takes its fair share at once when the limits say the fleet does not fit, and a refusal meanwhile caps it as usual', () => {
    const ceiling = new CapacityCeiling(10, () => 0, true)
    ceiling.connected(1)
    ceiling.setFairShare(5)
    ceiling.started() // the share stays
    expect([ceiling.starting, ceiling.ceiling, ceiling.limit(), ceiling.probeAt]).toEqual([false, 5, 5, MAX_CAPACITY_PROBE_MS])
    const refused = new CapacityCeiling(10, () => 0, true)
    refused.connected(2)
    refused.refused(2)
    expect([refused.starting, refused.ceiling, refused.probeAt]).toEqual([false, 2, FIRST_CAPACITY_PROBE_MS])
  })

  it('a pool that is not one of several starts unbounded', () => {
    expect(new CapacityCeiling(10, () => 0).limit()).toBe(10)
  })
})

describe('AdmissionGate starting', () => {
  it('lets one caller connect, queues the rest critical first, lets the next in as each connection opens, and all in once started', async () => {
    const gate = startingGate(10)
    expect(gate.tryAcquire()).toBe(false) // no free fast path while starting
    expect(gate.tryAcquireFor(criticalityRank('sheddable'))).toBe(true) // the first connect
    expect(gate.tryAcquireFor(criticalityRank('critical'))).toBe(false) // one at a time
    const sheddable = watch(gate.acquire(ticket('sheddable', 5_000)))
    const critical = watch(gate.acquire(ticket('critical', 5_000)))
    await flush()
    expect([sheddable(), critical()]).toEqual(['pending', 'pending'])
    // Not capped by the server: no capacity event, utilisation against max, no probe timer.
    expect([gate.capped, gate.ceiling, gate.utilisation]).toEqual([false, 10, 0.3])
    // No probe timer lets more in while the first connect is under way, however long it takes.
    await vi.advanceTimersByTimeAsync(2 * MAX_CAPACITY_PROBE_MS)
    expect([sheddable(), critical()]).toEqual(['pending', 'pending'])
    expect(gate.connected(1)).toBe(false) // the first connection opened: not a ceiling's rise
    await flush()
    expect([sheddable(), critical()]).toEqual(['pending', 'granted'])
    const more = [watch(gate.acquire(ticket('sheddable', 5_000))), watch(gate.acquire(ticket('sheddable', 5_000)))]
    gate.started()
    await flush()
    expect([sheddable(), ...more.map((w) => w())]).toEqual(['granted', 'granted', 'granted'])
    expect(gate.inUse).toBe(5)
    gate.rejectAll(new Error('done'))
  })

  it('lets in up to the fair share at once when the limits say the fleet does not fit', async () => {
    const gate = startingGate(10)
    const waiters = Array.from({ length: 7 }, () => watch(gate.acquire(ticket('critical', 5_000))))
    await flush()
    expect(waiters.filter((w) => w() === 'granted')).toHaveLength(1)
    gate.setFairShare(5)
    gate.started()
    await flush()
    expect(waiters.filter((w) => w() === 'granted')).toHaveLength(5)
    expect([gate.capped, gate.ceiling]).toEqual([true, 5])
    gate.rejectAll(new Error('done'))
  })
})
