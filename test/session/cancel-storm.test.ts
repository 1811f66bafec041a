import { sql } from 'kysely'
import { afterAll, describe, expect, it } from 'vitest'
import { DeadlineExceededError, LoadShedError, QueryCanceledError, withQueryContext, type CancelEvent } from '../../src/index.js'
import { governed, sleep, waitFor } from '../support/governed.js'
import { seededRandom } from '../support/seeded-random.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()
const MAX = 6
// Feasibility shedding off: the storm is about cancels, and it would refuse most tiny budgets before they run.
const { db, dialect, pool } = governed(database, { max: MAX, application_name: 'storm' }, { admission: { feasibility: false } })
const cancels: CancelEvent[] = []
dialect.events.on('cancel', (event) => cancels.push(event))
afterAll(() => db.destroy())

describe('invariants 2 and 4: a storm of short queries with random aborts and deadlines', () => {
  it('cancels only what was aborted, leaks nothing, and never exceeds pool max + control on the server', async () => {
    const next = seededRandom(20261122)
    const total = 2_500
    const concurrency = 40
    const outcomes = { ok: 0, canceledAborted: 0, deadline: 0, shed: 0, wronglyCanceled: 0, otherErrors: [] as unknown[] }
    let peakServerConnections = 0
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        const rows = await database.admin<{ n: number }>(
          `select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name in ('storm', 'storm (pg-governor control)')`,
        )
        peakServerConnections = Math.max(peakServerConnections, rows[0]?.n ?? 0)
        await sleep(10)
      }
    })()

    let started = 0
    const worker = async (): Promise<void> => {
      while (started < total) {
        const index = started++
        const sleepMs = Math.floor(next() * 4)
        const roll = next()
        const controller = new AbortController()
        const aborts = roll < 0.3
        const timeoutMs = roll > 0.9 ? 1 + Math.floor(next() * 4) : 10_000
        if (aborts) setTimeout(() => controller.abort(`abort ${index}`), Math.floor(next() * 5))
        try {
          const { rows } = await withQueryContext({ signal: controller.signal, timeoutMs }, () =>
            sql<{ id: number }>`select ${index}::int as id, pg_sleep(${sleepMs / 1000})`.execute(db),
          )
          expect(rows[0]?.id).toBe(index)
          outcomes.ok++
        } catch (error) {
          if (error instanceof QueryCanceledError && aborts) outcomes.canceledAborted++
          else if (error instanceof DeadlineExceededError && timeoutMs < 10_000) outcomes.deadline++
          // Admission refuses a tiny budget it predicts cannot be met, before sending anything.
          else if (error instanceof LoadShedError && error.reason === 'deadline' && timeoutMs < 10_000) outcomes.shed++
          else if ((error as { code?: string }).code === '57014' || error instanceof QueryCanceledError) outcomes.wronglyCanceled++
          else outcomes.otherErrors.push(error)
        }
      }
    }
    await Promise.all(Array.from({ length: concurrency }, worker))
    sampling = false
    await sampler

    expect(outcomes.otherErrors).toEqual([])
    expect(outcomes.wronglyCanceled).toBe(0)
    expect(outcomes.ok + outcomes.canceledAborted + outcomes.deadline + outcomes.shed).toBe(total)
    // The storm must really have exercised cancellation, or it proves nothing.
    expect(outcomes.canceledAborted).toBeGreaterThan(100)
    expect(outcomes.deadline).toBeGreaterThan(20)
    expect(peakServerConnections).toBeLessThanOrEqual(MAX + 1)

    await waitFor('the pool to return to its idle baseline', async () => {
      const stats = dialect.poolStats()
      return stats.permits === 0 && stats.used === 0 && stats.waiting === 0 && stats.pgPoolWaiting === 0
    })
    expect(pool.totalCount).toBeLessThanOrEqual(MAX)
    expect(dialect.poolStats().idle).toBe(pool.totalCount)
    // Connections kept warm go back to pg-pool once idle.
    await waitFor('kept connections to go back to pg-pool', async () => pool.idleCount === pool.totalCount)
    // Every server-side cancel was confirmed on the control connection; none cost a connection.
    expect(cancels.length).toBeGreaterThan(0)
    expect(cancels.filter((event) => event.destroyed || event.outcome?.method !== 'backend')).toEqual([])
    const busy = await database.admin(`select pid from pg_stat_activity where application_name = 'storm' and state <> 'idle'`)
    expect(busy).toEqual([])
  })
})
