import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { AdmissionGate } from '../../src/admission/admission-gate.js'
import { resolveAdmissionPolicy, type AdmissionOptions } from '../../src/admission/admission-policy.js'
import { BORROW_MS, CapacityCeiling, FIRST_CAPACITY_PROBE_MS, MAX_CAPACITY_PROBE_MS, isCapacityRefusal } from '../../src/admission/capacity-ceiling.js'
import { CircuitBreaker, isConnectionFailure } from '../../src/admission/circuit-breaker.js'
import { LoadEstimator } from '../../src/admission/load-estimator.js'
import { criticalityRank } from '../../src/context/criticality.js'
import { LoadShedError } from '../../src/errors/load-shed-error.js'
import { sizeFleet, type ServerLimitsRow } from '../../src/governor/server-limits.js'
import { ticket } from '../support/admission-ticket.js'

// As in admission-gate.unit.test.ts: the monotonic clock on the fake Date.
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

function gateOf(max: number, admission: AdmissionOptions = { feasibility: false }): AdmissionGate {
  return new AdmissionGate(max, resolveAdmissionPolicy(admission), new LoadEstimator(), new CircuitBreaker())
}


function watch(promise: Promise<void>): () => 'pending' | 'granted' | 'rejected' {
  let state: 'pending' | 'granted' | 'rejected' = 'pending'
  promise.then(
    () => (state = 'granted'),
    () => (state = 'rejected'),
  )
  return () => state
}

const flush = (): Promise<void> => new Promise((resolve) => queueMicrotask(resolve))

describe('what counts as a refusal for capacity', () => {
  it('53300 and the servers\' and PgBouncer\'s "full" messages are capacity, and none of them is a connection failure', () => {
    const refusals = [
      Object.assign(new Error('sorry, too many clients already'), { code: '53300' }),
      Object.assign(new Error('too many connections for role "app"'), { code: '53300' }),
      Object.assign(new Error('remaining connection slots are reserved for roles with the SUPERUSER attribute'), { code: '53300' }),
      Object.assign(new Error('no more connections allowed (max_client_conn)'), { code: '08P01' }),
    ]
    for (const error of refusals) {
      expect(isCapacityRefusal(error)).toBe(true)
      expect(isConnectionFailure(error)).toBe(false)
    }
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })
    expect(isCapacityRefusal(refused)).toBe(false)
    expect(isConnectionFailure(refused)).toBe(true)
  })
})

describe('CapacityCeiling', () => {
  it('caps at the connections held, probes one higher after a growing wait, and rises with each success back to max', () => {
    let t = 0
    const ceiling = new CapacityCeiling(10, () => t)
    expect(ceiling.limit()).toBe(10)
    ceiling.refused(3)
    expect([ceiling.capped, ceiling.ceiling, ceiling.limit()]).toEqual([true, 3, 3])
    t = FIRST_CAPACITY_PROBE_MS
    expect(ceiling.limit()).toBe(4) // the probe upward is due
    ceiling.refused(3) // it failed: the wait doubles
    expect(ceiling.probeAt).toBe(t + 2 * FIRST_CAPACITY_PROBE_MS)
    for (let i = 0; i < 10; i++) ceiling.refused(3)
    expect(ceiling.probeAt - t).toBe(MAX_CAPACITY_PROBE_MS)
    t = ceiling.probeAt
    expect(ceiling.connected(4)).toBe(true)
    expect([ceiling.ceiling, ceiling.limit()]).toEqual([4, 4])
    expect(ceiling.connected(4)).toBe(false)
    // Each new session proves one more slot, no more: the others counted may be on their way out.
    expect(ceiling.connected(10)).toBe(true)
    expect(ceiling.ceiling).toBe(5)
    for (let total = 6; total <= 10; total++) ceiling.connected(total)
    expect([ceiling.capped, ceiling.limit()]).toEqual([false, 10])
  })

  it('a refusal while holding nothing caps at zero; a refusal never caps at max', () => {
    const ceiling = new CapacityCeiling(4, () => 0)
    ceiling.refused(0)
    expect(ceiling.limit()).toBe(0)
    ceiling.refused(9)
    expect(ceiling.ceiling).toBe(3)
  })
})

describe('CapacityCeiling with the fleet\'s fair share (the fleet does not fit)', () => {
  it('comes down to the share, climbs above it only by slow probes, and gives each borrowed slot back after BORROW_MS', () => {
    let t = 0
    const ceiling = new CapacityCeiling(10, () => t)
    ceiling.setFairShare(4)
    expect([ceiling.capped, ceiling.ceiling, ceiling.limit()]).toEqual([true, 4, 4])
    // Connects begun before the cap succeed: they prove room, not a right to it.
    expect(ceiling.connected(9)).toBe(false)
    t = MAX_CAPACITY_PROBE_MS
    expect(ceiling.limit()).toBe(5) // the slow probe above the share
    expect(ceiling.connected(5)).toBe(true)
    expect([ceiling.ceiling, ceiling.probeAt - t]).toEqual([5, MAX_CAPACITY_PROBE_MS])
    t += BORROW_MS
    expect(ceiling.ceiling).toBe(4) // given back
    expect(ceiling.limit()).toBe(4) // and not tried for again at once
  })

  it('below the share, probes keep the first pace however often they fail; closing a connection lowers a ceiling above the share only', () => {
    let t = 0
    const ceiling = new CapacityCeiling(10, () => t)
    ceiling.setFairShare(4)
    ceiling.refused(2)
    ceiling.refused(2)
    ceiling.refused(2)
    expect(ceiling.probeAt - t).toBe(FIRST_CAPACITY_PROBE_MS)
    t = 10_000
    ceiling.connected(3)
    ceiling.connected(4)
    t += MAX_CAPACITY_PROBE_MS
    ceiling.connected(5)
    expect(ceiling.ceiling).toBe(5)
    ceiling.gaveBack(3)
    expect(ceiling.ceiling).toBe(4)
  })
})

describe('AdmissionGate capped by the server', () => {
  it('serves its waiters from the connections it holds, critical first, and sheds sheddable by the reachable ceiling', async () => {
    const gate = gateOf(10)
    for (let i = 0; i < 4; i++) await gate.acquire(ticket('critical_plus'))
    gate.capacityRefused(3) // the fourth connect was refused: three are held
    gate.release() // the refused caller's permit
    expect([gate.ceiling, gate.inUse, gate.capped]).toEqual([3, 3, true])
    expect(gate.tryAcquire()).toBe(false) // no fast path while capped
    const critical = watch(gate.acquire(ticket('critical')))
    // 4 of 3 reachable: sheddable is refused by utilisation even though 3 of 10 is little.
    const shed = await gate.acquire(ticket('sheddable')).catch((error: unknown) => error)
    expect(shed).toBeInstanceOf(LoadShedError)
    expect((shed as LoadShedError).message).toMatch(/of the 3 connections the server lets this pool reach/)
    gate.release()
    await flush()
    expect(critical()).toBe('granted')
    expect(gate.inUse).toBe(3)
    gate.rejectAll(new Error('done'))
  })

  it('a pool that holds nothing is woken for the probe upward by a timer, and the ceiling rises with the connection', async () => {
    const gate = gateOf(10)
    gate.capacityRefused(0)
    const first = watch(gate.acquire(ticket('critical', 5_000)))
    const second = watch(gate.acquire(ticket('critical', 5_000)))
    await flush()
    expect([first(), second()]).toEqual(['pending', 'pending'])
    await vi.advanceTimersByTimeAsync(FIRST_CAPACITY_PROBE_MS)
    expect([first(), second()]).toEqual(['granted', 'pending']) // one probe at a time
    gate.capacityRefused(0) // the probe was refused too
    gate.release()
    await vi.advanceTimersByTimeAsync(2 * FIRST_CAPACITY_PROBE_MS)
    expect(second()).toBe('granted')
    expect(gate.connected(1)).toBe(true) // it got a session
    expect(gate.ceiling).toBe(1)
    gate.rejectAll(new Error('done'))
  })
})

describe('AdmissionGate capped by the server: the probe timer and its clock reads', () => {
  it('a pool that holds nothing is not left asleep when the probe comes due between two clock reads', async () => {
    // The gate's wake-up reads the clock to see whether the probe is due, and again to arm the
    // next timer. The ceiling's first read at the probe's time says "not yet" (2 ms behind) and
    // later reads the true time, as two reads of a busy machine's clock can straddle the instant.
    const probeAt = Date.now() + FIRST_CAPACITY_PROBE_MS
    let lagged = false
    const clock = (): number => {
      if (Date.now() < probeAt || lagged) return Date.now()
      lagged = true
      return Date.now() - 2
    }
    const gate = new AdmissionGate(10, resolveAdmissionPolicy({ feasibility: false }), new LoadEstimator(), new CircuitBreaker(), new CapacityCeiling(10, clock))
    gate.capacityRefused(0)
    const waiter = watch(gate.acquire(ticket('critical', 5_000)))
    await vi.advanceTimersByTimeAsync(FIRST_CAPACITY_PROBE_MS + 10)
    expect(lagged).toBe(true)
    expect(waiter()).toBe('granted')
    gate.rejectAll(new Error('done'))
  })
})

describe('AdmissionGate with the server\'s saturation', () => {
  it('sheds sheddable by the server\'s saturation when the pool itself is idle, and stops when it falls', async () => {
    const gate = gateOf(10)
    gate.setServerSaturation(0.85)
    expect(gate.tryAcquire()).toBe(false)
    expect(gate.tryAcquireFor(criticalityRank('sheddable'))).toBe(false)
    const shed = await gate.acquire(ticket('sheddable')).catch((error: unknown) => error)
    expect(shed).toMatchObject({ reason: 'utilisation', criticality: 'sheddable' })
    expect((shed as Error).message).toMatch(/server saturation 0.85/)
    expect(gate.sheddingLevel).toBe('sheddable')
    await gate.acquire(ticket('sheddable_plus')) // 0.85 is below sheddable_plus's 0.9
    await gate.acquire(ticket('critical'))
    gate.setServerSaturation(0.1)
    expect(gate.sheddingLevel).toBeUndefined()
    expect(gate.tryAcquire()).toBe(true)
  })
})

describe('sizeFleet: the sizing rule', () => {
  const row: ServerLimitsRow = {
    max_connections: 100,
    superuser_reserved_connections: 3,
    reserved_connections: 5,
    superuser: false,
    uses_reserved: false,
    role_connection_limit: -1,
    database_connection_limit: -1,
  }

  it('max_connections less the reserved slots, one control connection per instance', () => {
    const fits = sizeFleet(row, { poolMax: 22, expectedInstances: 4 }) // 4 x 23 = 92 <= 92
    expect(fits).toMatchObject({ usableSlots: 92, limitedBy: 'server', needed: 92, fits: true, suggestedPoolMax: 22 })
    expect(sizeFleet(row, { poolMax: 23, expectedInstances: 4 })).toMatchObject({ needed: 96, fits: false, suggestedPoolMax: 22 })
    expect(sizeFleet({ ...row, uses_reserved: true }, { poolMax: 10, expectedInstances: 1 }).usableSlots).toBe(97)
    expect(sizeFleet({ ...row, superuser: true, role_connection_limit: 2 }, { poolMax: 10, expectedInstances: 1 }).usableSlots).toBe(100)
  })

  it('the role\'s or the database\'s connection limit when lower', () => {
    expect(sizeFleet({ ...row, role_connection_limit: 20 }, { poolMax: 10, expectedInstances: 2 })).toMatchObject({ usableSlots: 20, limitedBy: 'role', fits: false, suggestedPoolMax: 9 })
    expect(sizeFleet({ ...row, role_connection_limit: 20, database_connection_limit: 12 }, { poolMax: 5, expectedInstances: 2 })).toMatchObject({
      usableSlots: 12,
      limitedBy: 'database',
      fits: true,
    })
  })
})
