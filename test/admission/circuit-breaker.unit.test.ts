import { describe, expect, it } from 'vitest'
import { CircuitBreaker, isConnectionFailure, type CircuitBreakerOptions, type CircuitState } from '../../src/admission/circuit-breaker.js'

/** A breaker on a clock the test moves by hand, with the states it announced. */
function breaker(options: CircuitBreakerOptions = {}): { cb: CircuitBreaker; states: CircuitState[]; advance: (ms: number) => void } {
  let t = 1_000
  const states: CircuitState[] = []
  const cb = new CircuitBreaker(options, (state) => states.push(state), () => t)
  return { cb, states, advance: (ms) => (t += ms) }
}

function fail(cb: CircuitBreaker, times: number): void {
  for (let i = 0; i < times; i++) cb.recordFailure()
}

describe('CircuitBreaker', () => {
  it('opens after failureThreshold consecutive failures; a success in between starts the count again', () => {
    const { cb, states } = breaker({ failureThreshold: 3 })
    fail(cb, 2)
    cb.recordSuccess()
    fail(cb, 2)
    expect(cb.state).toBe('closed')
    expect(cb.allows()).toBe(true)
    cb.recordFailure()
    expect(cb.state).toBe('open')
    expect(states).toEqual(['open'])
  })

  it('a connect begun before the circuit closed, or before the probe out went, fails without effect (toxiproxy timeout: it fails after the heal)', () => {
    const { cb, states, advance } = breaker({ failureThreshold: 2 })
    const duringFault = [0, 1, 2, 3].map(() => cb.attemptStarted())
    fail(cb, 2)
    advance(50)
    expect(cb.allows()).toBe(true) // the probe
    const beforeProbe = duringFault[0] as number
    cb.recordFailure(beforeProbe)
    expect(cb.state).toBe('half_open')
    cb.recordSuccess() // healed
    advance(400)
    for (const startedAt of duringFault.slice(1)) cb.recordFailure(startedAt) // closed by the proxy only now
    expect(cb.state).toBe('closed')
    expect(states).toEqual(['open', 'half_open', 'closed'])
    // A connect begun after the close counts as before.
    const fresh = cb.attemptStarted()
    cb.recordFailure(fresh)
    cb.recordFailure(fresh)
    expect(cb.state).toBe('open')
  })

  it('never opens with failureThreshold 0', () => {
    const { cb, states } = breaker({ failureThreshold: 0 })
    fail(cb, 100)
    expect(cb.state).toBe('closed')
    expect(states).toEqual([])
  })

  it('refuses while open, then lets exactly one probe through and reports half_open', () => {
    const { cb, states, advance } = breaker({ failureThreshold: 1 })
    cb.recordFailure()
    expect(cb.allows()).toBe(false)
    expect(cb.probeDue).toBe(false)
    expect(cb.retryAfterMs).toBe(50)
    advance(49)
    expect(cb.allows()).toBe(false)
    advance(1)
    expect(cb.probeDue).toBe(true)
    expect(cb.state).toBe('open') // nobody has probed yet
    expect(cb.allows()).toBe(true)
    expect(cb.state).toBe('half_open')
    expect(cb.retryAfterMs).toBe(0)
    // The probe is out: everyone else fails fast, however many ask.
    for (let i = 0; i < 10; i++) expect(cb.allows()).toBe(false)
    expect(cb.probeDue).toBe(false)
    expect(states).toEqual(['open', 'half_open'])
  })

  it('closes when the probe succeeds, with the failure count started again', () => {
    const { cb, states, advance } = breaker({ failureThreshold: 2 })
    fail(cb, 2)
    advance(50)
    expect(cb.allows()).toBe(true)
    cb.recordSuccess()
    expect(cb.state).toBe('closed')
    expect(cb.allows()).toBe(true)
    expect(states).toEqual(['open', 'half_open', 'closed'])
    cb.recordFailure()
    expect(cb.state).toBe('closed')
    cb.recordFailure()
    expect(cb.state).toBe('open')
  })

  it('reopens when the probe fails, spacing probes out with the outage up to resetAfterMs', () => {
    const { cb, states, advance } = breaker({ failureThreshold: 1, resetAfterMs: 2_000 })
    cb.recordFailure()
    const waits: number[] = []
    let elapsed = 0
    while (elapsed < 120_000) {
      // Each wait is a twentieth of the outage when the last probe failed, at least 50 ms, at most resetAfterMs.
      const wait = cb.retryAfterMs
      expect(wait).toBe(Math.ceil(Math.min(2_000, Math.max(50, elapsed / 20))))
      waits.push(wait)
      advance(wait)
      elapsed += wait
      expect(cb.allows()).toBe(true)
      cb.recordFailure()
      expect(cb.state).toBe('open')
    }
    // The first second probes every 50 ms: a short outage is noticed at once.
    expect(waits.slice(0, 20)).toEqual(Array(20).fill(50))
    expect(waits[20]).toBe(50)
    expect(waits[21]).toBeGreaterThan(50)
    expect(waits.at(-1)).toBe(2_000)
    // About 135 probes in two minutes of outage (20 in the first second, then one every 2 s).
    expect(waits.length).toBeLessThan(140)
    expect(states.slice(0, 4)).toEqual(['open', 'half_open', 'open', 'half_open'])
  })

  it('never waits longer than resetAfterMs, even for the first probe', () => {
    const { cb } = breaker({ failureThreshold: 1, resetAfterMs: 20 })
    cb.recordFailure()
    expect(cb.retryAfterMs).toBe(20)
  })

  it('lets another caller probe when the probe has not reported within resetAfterMs (it took a kept connection, or its caller gave up)', () => {
    const { cb, states, advance } = breaker({ failureThreshold: 1, resetAfterMs: 500 })
    cb.recordFailure()
    advance(50)
    expect(cb.allows()).toBe(true)
    advance(499)
    expect(cb.allows()).toBe(false)
    advance(1)
    expect(cb.probeDue).toBe(true)
    expect(cb.allows()).toBe(true)
    // One probe again, with a lease of its own.
    expect(cb.allows()).toBe(false)
    advance(499)
    expect(cb.allows()).toBe(false)
    cb.recordSuccess()
    expect(states).toEqual(['open', 'half_open', 'closed'])
  })

  it('lets the next caller probe at once when the probe was served by a kept connection (releaseProbe)', () => {
    const { cb, states, advance } = breaker({ failureThreshold: 1, resetAfterMs: 500 })
    cb.recordFailure()
    advance(50)
    expect(cb.allows()).toBe(true)
    expect(cb.allows()).toBe(false)
    cb.releaseProbe()
    expect(cb.allows()).toBe(true)
    expect(cb.allows()).toBe(false)
    cb.releaseProbe()
    cb.recordSuccess()
    cb.releaseProbe() // closed: nothing to release
    expect(cb.allows()).toBe(true)
    expect(states).toEqual(['open', 'half_open', 'closed'])
  })

  it('keeps the probe schedule when a connect begun before the circuit opened fails late', () => {
    const { cb, advance } = breaker({ failureThreshold: 1 })
    cb.recordFailure()
    advance(30)
    cb.recordFailure()
    expect(cb.retryAfterMs).toBe(20)
  })

  it('validates its options', () => {
    expect(() => new CircuitBreaker({ failureThreshold: -1 })).toThrow(expect.objectContaining({ option: 'circuitBreaker.failureThreshold' }))
    expect(() => new CircuitBreaker({ failureThreshold: 1.5 })).toThrow(expect.objectContaining({ option: 'circuitBreaker.failureThreshold' }))
    expect(() => new CircuitBreaker({ resetAfterMs: 0 })).toThrow(expect.objectContaining({ option: 'circuitBreaker.resetAfterMs' }))
    expect(() => new CircuitBreaker({ resetAfterMs: Infinity })).toThrow(expect.objectContaining({ option: 'circuitBreaker.resetAfterMs' }))
  })
})

describe('isConnectionFailure', () => {
  it('counts an unreachable server, a shutdown and a refused login', () => {
    for (const code of ['08006', '08001', '57P01', '57P02', '57P03', '28000', '28P01', 'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND']) {
      expect(isConnectionFailure(Object.assign(new Error('x'), { code })), code).toBe(true)
    }
    expect(isConnectionFailure(new Error('Connection terminated unexpectedly'))).toBe(true)
    expect(isConnectionFailure(new Error('timeout exceeded when trying to connect'))).toBe(true)
  })

  it('does not count a full server (53300, too many connections): invariant 9', () => {
    const full = Object.assign(new Error('sorry, too many clients already'), { code: '53300' })
    expect(isConnectionFailure(full)).toBe(false)
    const reserved = Object.assign(new Error('remaining connection slots are reserved for roles with the SUPERUSER attribute'), { code: '53300' })
    expect(isConnectionFailure(reserved)).toBe(false)
  })

  it('does not count a failing statement', () => {
    for (const code of ['42P01', '57014', '23505', '40001']) {
      expect(isConnectionFailure(Object.assign(new Error('x'), { code })), code).toBe(false)
    }
    expect(isConnectionFailure(undefined)).toBe(false)
    expect(isConnectionFailure(null)).toBe(false)
  })
})
