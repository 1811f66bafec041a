import { Kysely, sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { GovernedPostgresDialect, withQueryContext, DeadlineExceededError } from '../../src/index.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()

describe('smoke', () => {
  it('runs a query and cancels one past its deadline', async () => {
    const db = new Kysely<any>({ dialect: new GovernedPostgresDialect({ pool: database.pool({ max: 2 }) }) })
    const { rows } = await sql<{ one: number }>`select 1 as one`.execute(db)
    expect(rows).toEqual([{ one: 1 }])
    const started = performance.now()
    const error = await withQueryContext({ timeoutMs: 200 }, () => sql`select pg_sleep(5)`.execute(db)).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(DeadlineExceededError)
    expect(performance.now() - started).toBeLessThan(1000)
    await new Promise((r) => setTimeout(r, 50))
    const active = await database.admin(`select count(*)::int as n from pg_stat_activity where query like 'select pg_sleep(5)%' and state = 'active'`)
    expect(active[0]?.n).toBe(0)
    await db.destroy()
  })
})
