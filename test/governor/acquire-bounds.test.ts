import { Kysely, sql } from 'kysely'
import pg from 'pg'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { DeadlineExceededError, GovernedPostgresDialect, withQueryContext } from '../../src/index.js'
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()

/** Settles `promise` into its outcome, or 'hung' after `ms`. */
async function outcomeWithin(promise: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined
  const hung = new Promise<string>((resolve) => (timer = setTimeout(() => resolve('hung'), ms)))
  try {
    return await Promise.race([promise.then(() => 'ok', (error: unknown) => error), hung])
  } finally {
    clearTimeout(timer)
  }
}

describe('every acquire is bounded by the budget, on every path', () => {
  let proxy: FaultProxy
  beforeEach(async () => {
    proxy = await startFaultProxy(database.url)
  })
  afterEach(() => proxy.close())

  it('callers arriving together while pg-pool has one idle client do not hang on the new connections pg-pool opens for the others', async () => {
    // pg-pool queues callers that arrive in one tick while it has idle clients, then opens new
    // clients for all but the first; against an unreachable server those opens never end.
    const pool = new pg.Pool({ connectionString: proxy.url, max: 4 })
    const db = new Kysely<any>({ dialect: new GovernedPostgresDialect({ pool, warmConnections: false }) })
    try {
      await sql`select 1`.execute(db)
      expect(pool.idleCount).toBe(1)
      proxy.mode = 'blackhole'
      const started = performance.now()
      const outcomes = await Promise.all(
        [1, 2, 3].map(() => outcomeWithin(withQueryContext({ timeoutMs: 300 }, () => sql`select 1`.execute(db)), 3_000)),
      )
      expect(outcomes).not.toContain('hung')
      expect(outcomes.filter((outcome) => outcome === 'ok')).toHaveLength(1)
      const expired = outcomes.filter((outcome) => outcome instanceof DeadlineExceededError) as DeadlineExceededError[]
      expect(expired).toHaveLength(2)
      expect(expired.map((error) => error.phase)).toEqual(['waiting', 'waiting'])
      expect(performance.now() - started).toBeLessThan(2_000)
    } finally {
      proxy.mode = 'forward'
      await proxy.close()
      await db.destroy().catch(() => {})
    }
  })
})
