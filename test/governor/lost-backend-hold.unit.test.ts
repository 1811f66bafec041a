import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { LOST_BACKEND_MARGIN_MS, LOST_BACKEND_MAX_HOLD_MS, LostBackendHold, type BackendToFind } from '../../src/governor/lost-backend-hold.js'
import { UnansweredStatement } from '../../src/session/unanswered-statement.js'

// The hold reads the monotonic clock: put it on the fake Date, which advances with the fake timers (vitest hoists mocks per file).
vi.mock('../../src/context/monotonic-clock.js', () => ({
  now: () => Date.now(),
  monotonicFromWallClock: (epochMs: number) => epochMs,
}))
beforeAll(() => {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] })
})
beforeEach(() => {
  vi.clearAllTimers()
})
afterAll(() => {
  vi.useRealTimers()
})

/** A server the hold looks at: backends by pid, reachable or not; each look answers at once. */
function fakeServer() {
  const server = {
    reachable: true,
    running: new Set<number>(),
    /** Whether a terminated backend is gone at the next look (else it lingers). */
    exitsOnTerminate: true,
    looks: [] as (readonly BackendToFind[])[],
    terminated: [] as number[],
  }
  const terminate = async (backends: readonly BackendToFind[]): Promise<ReadonlySet<number>> => {
    server.looks.push(backends)
    if (!server.reachable) throw new Error('unreachable')
    const found = new Set(backends.filter((b) => server.running.has(b.pid)).map((b) => b.pid))
    for (const pid of found) {
      server.terminated.push(pid)
      if (server.exitsOnTerminate) server.running.delete(pid)
    }
    return found
  }
  return { server, terminate }
}

function setup(options: { maxHoldMs?: number } = {}) {
  const { server, terminate } = fakeServer()
  let freed = 0
  const hold = new LostBackendHold({ terminate, free: () => freed++, ...options })
  return { server, hold, freed: () => freed }
}

describe('LostBackendHold: a lost backend keeps its permit until the server surely no longer runs it', () => {
  it('gives the permit back at once when the server says the backend is gone', async () => {
    const { hold, freed, server } = setup()
    hold.hold({ pid: 7, bornAt: Date.now() - 1_000, stopsBy: Date.now() + 10_000 })
    expect(hold.size).toBe(1)
    await vi.advanceTimersByTimeAsync(0)
    expect(freed()).toBe(1)
    expect(hold.size).toBe(0)
    expect(server.looks[0]).toEqual([{ pid: 7, minAgeMs: 1_000 }])
  })

  it('terminates a backend that still runs, and gives the permit back once it is gone', async () => {
    const { hold, freed, server } = setup()
    server.running.add(7)
    server.exitsOnTerminate = false
    hold.hold({ pid: 7, bornAt: Date.now(), stopsBy: Date.now() + 10_000 })
    await vi.advanceTimersByTimeAsync(0)
    expect(server.terminated).toEqual([7])
    expect(freed()).toBe(0)
    // It exits a moment later: the next look (10 ms after) sees it gone.
    server.running.delete(7)
    await vi.advanceTimersByTimeAsync(10)
    expect(freed()).toBe(1)
    expect(hold.size).toBe(0)
  })

  it('while the server cannot be asked, gives the permit back once the statement_timeout has stopped the statement (+ margin), not before', async () => {
    const { hold, freed, server } = setup()
    server.reachable = false
    const at = Date.now()
    hold.hold({ pid: 7, bornAt: at - 5_000, stopsBy: at + 2_000 })
    await vi.advanceTimersByTimeAsync(2_000 + LOST_BACKEND_MARGIN_MS - 1)
    expect(freed()).toBe(0)
    // Looks go on, backing off to 250 ms apart.
    const looks = server.looks.length
    expect(looks).toBeGreaterThan(5)
    expect(looks).toBeLessThan(20)
    await vi.advanceTimersByTimeAsync(1)
    expect(freed()).toBe(1)
    // Nothing left: no more looks, no timer.
    const after = server.looks.length
    await vi.advanceTimersByTimeAsync(5_000)
    expect(server.looks.length).toBe(after)
    expect(vi.getTimerCount()).toBe(0)
  })

  it('sees a heal within a look: the permit goes back as soon as the server answers again', async () => {
    const { hold, freed, server } = setup()
    server.reachable = false
    server.running.add(7)
    hold.hold({ pid: 7, bornAt: Date.now(), stopsBy: Date.now() + 60_000 })
    await vi.advanceTimersByTimeAsync(3_000)
    expect(freed()).toBe(0)
    server.reachable = true
    // The next look (at most 250 ms away) terminates it, the one after (10 ms) sees it gone.
    await vi.advanceTimersByTimeAsync(260)
    expect(server.terminated).toEqual([7])
    expect(freed()).toBe(1)
  })

  it('never holds a permit past the cap, even with no statement_timeout known', async () => {
    const { hold, freed, server } = setup()
    server.reachable = false
    hold.hold({ pid: 7, bornAt: Date.now(), stopsBy: Infinity })
    await vi.advanceTimersByTimeAsync(LOST_BACKEND_MAX_HOLD_MS - 1)
    expect(freed()).toBe(0)
    await vi.advanceTimersByTimeAsync(1)
    expect(freed()).toBe(1)
    expect(vi.getTimerCount()).toBe(0)
  })

  it('looks for every held backend in one statement, and frees each on its own evidence', async () => {
    const { hold, freed, server } = setup()
    server.reachable = false
    const at = Date.now()
    hold.hold({ pid: 1, bornAt: at, stopsBy: at + 60_000 })
    hold.hold({ pid: 2, bornAt: at, stopsBy: at + 60_000 })
    server.running.add(2)
    server.exitsOnTerminate = false
    await vi.advanceTimersByTimeAsync(100)
    // The first look went before pid 2 was held; every one after it asks for both.
    const looksBeforeHeal = server.looks.length
    expect(server.looks.slice(1).every((look) => look.map((b) => b.pid).join() === '1,2')).toBe(true)
    server.reachable = true
    await vi.advanceTimersByTimeAsync(250)
    expect(freed()).toBe(1)
    expect(hold.size).toBe(1)
    expect(server.looks[looksBeforeHeal]?.map((b) => b.pid)).toEqual([1, 2])
    server.running.delete(2)
    await vi.advanceTimersByTimeAsync(250)
    expect(freed()).toBe(2)
    expect(vi.getTimerCount()).toBe(0)
  })

  it('stop() gives every held permit back and leaves no timer; a hold after it frees at once', async () => {
    const { hold, freed, server } = setup()
    server.reachable = false
    hold.hold({ pid: 1, bornAt: Date.now(), stopsBy: Infinity })
    hold.hold({ pid: 2, bornAt: Date.now(), stopsBy: Infinity })
    await vi.advanceTimersByTimeAsync(50)
    hold.stop()
    expect(freed()).toBe(2)
    expect(vi.getTimerCount()).toBe(0)
    hold.hold({ pid: 3, bornAt: Date.now(), stopsBy: Infinity })
    expect(freed()).toBe(3)
    expect(hold.size).toBe(0)
  })
})

describe('UnansweredStatement: which backends may still run', () => {
  const serverError = Object.assign(new Error('canceling statement due to user request'), { code: '57014', severity: 'ERROR' })

  it('a statement answered by the server (a result or a server error) leaves nothing that may run', () => {
    const mark = new UnansweredStatement(0)
    mark.sent(10)
    expect(mark.lostBackend(7, 1_000)).toEqual({ pid: 7, bornAt: 0, stopsBy: 1_010 })
    mark.ended(undefined)
    expect(mark.lostBackend(7, 1_000)).toBeUndefined()
    mark.sent(20)
    mark.ended(serverError)
    expect(mark.lostBackend(7, 1_000)).toBeUndefined()
  })

  it('a statement ended by the client side (connection lost) may still run until its statement_timeout; with none known, without a bound', () => {
    const mark = new UnansweredStatement(0)
    mark.sent(10)
    mark.ended(new Error('Connection terminated unexpectedly'))
    expect(mark.lostBackend(7, 2_000)?.stopsBy).toBe(2_010)
    mark.sent(20)
    expect(mark.lostBackend(7, 'default')?.stopsBy).toBe(Infinity)
    mark.sent(30)
    expect(mark.lostBackend(7, 0)?.stopsBy).toBe(Infinity)
    expect(mark.lostBackend(undefined, 2_000)).toBeUndefined()
  })
})
