import { sql } from 'kysely'
import { afterAll, describe, expect, it } from 'vitest'
import { governed, rejectionOf, sleep, waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()
const { db, dialect, pool } = governed(database, { max: 4, application_name: 'recovery' }, { leakDetectionThresholdMs: 100 })
const poolErrors: Error[] = []
dialect.events.on('poolError', (error) => poolErrors.push(error))
afterAll(() => db.destroy())

describe('invariant 6: killed connections', () => {
  it('survives pg_terminate_backend of idle, busy and checked-out connections, and recovers', async () => {
    await Promise.all([1, 2, 3, 4].map(() => sql`select pg_sleep(0.02)`.execute(db)))
    // Idle: kept warm by the dialect or back in pg-pool.
    expect(dialect.poolStats().idle).toBe(4)
    // Idle connections killed under the pool.
    await database.admin(`select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'recovery'`)
    await waitFor('pg-pool to drop the dead idle clients', async () => pool.totalCount === 0)
    expect(poolErrors.length).toBeGreaterThan(0)

    // A connection checked out between statements (no query running) killed: the error must not crash us.
    const pinned = db.connection().execute(async (connection) => {
      const { rows } = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(connection)
      await database.admin('select pg_terminate_backend($1)', [rows[0]?.pid])
      await sleep(50)
      return rejectionOf(sql`select 1`.execute(connection))
    })
    const pinnedError = await pinned
    expect(pinnedError.message).toMatch(/terminat|Connection|discarded/i)

    // A busy connection killed mid-query.
    // The handler is attached at once: the rejection may come while we are still issuing the terminate.
    const busy = rejectionOf(sql`select pg_sleep(5) as recovery_busy`.execute(db))
    await waitFor('the busy query', async () => (await database.admin(`select 1 from pg_stat_activity where query like '%recovery_busy%' and state = 'active' and pid <> pg_backend_pid()`)).length === 1)
    await database.admin(`select pg_terminate_backend(pid) from pg_stat_activity where query like '%recovery_busy%' and pid <> pg_backend_pid()`)
    expect((await busy).code).toBe('57P01')

    await waitFor('the pool to settle', async () => dialect.poolStats().permits === 0)
    const results = await Promise.all([1, 2, 3, 4, 5, 6].map((n) => sql<{ n: number }>`select ${n}::int as n`.execute(db)))
    expect(results.map((result) => result.rows[0]?.n)).toEqual([1, 2, 3, 4, 5, 6])
    expect(dialect.poolStats()).toMatchObject({ permits: 0, waiting: 0, used: 0, circuit: 'closed' })
  })
})

describe('leak detection', () => {
  it('warns with the acquiring stack when a connection is held past the threshold', async () => {
    const leaks: { heldMs: number; stack: string }[] = []
    const off = dialect.events.on('leak', (event) => leaks.push(event))
    await db.connection().execute(async () => {
      await sleep(300)
    })
    off()
    expect(leaks).toHaveLength(1)
    expect(leaks[0]?.heldMs).toBeGreaterThanOrEqual(100)
    expect(leaks[0]?.stack).toContain('pool-recovery.test.ts')
    // A short checkout does not warn.
    const quiet: unknown[] = []
    const off2 = dialect.events.on('leak', (event) => quiet.push(event))
    await sql`select 1`.execute(db)
    await sleep(250)
    off2()
    expect(quiet).toEqual([])
  })
})
