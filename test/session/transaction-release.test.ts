import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DeadlineExceededError, withQueryContext } from '../../src/index.js'
import { activeWithTag, governed, rejectionOf, waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()
const { db, dialect } = governed(database, { max: 1, application_name: 'tx-release' })
afterAll(() => db.destroy())
beforeAll(async () => {
  await sql`create table ledger (id int primary key)`.execute(db)
})

describe('invariant 5: a connection released inside a transaction', () => {
  it('is rolled back before the next caller gets it', async () => {
    const pidInside = await db.connection().execute(async (connection) => {
      await sql`begin`.execute(connection)
      await sql`insert into ledger values (1)`.execute(connection)
      const { rows } = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(connection)
      return rows[0]?.pid
      // released here without commit or rollback
    })
    // Pool max is 1: the next caller gets the very same backend.
    const { rows } = await sql<{ pid: number; xid: string | null }>`select pg_backend_pid() as pid, pg_current_xact_id_if_assigned()::text as xid`.execute(db)
    expect(rows[0]?.pid).toBe(pidInside)
    expect(rows[0]?.xid).toBeNull()
    expect(await database.admin('select * from ledger')).toEqual([])
    const open = await database.admin(`select 1 from pg_stat_activity where application_name = 'tx-release' and state like 'idle in transaction%'`)
    expect(open).toEqual([])
  })

  it('a transaction whose statement passes its deadline is cancelled and rolled back promptly', async () => {
    const tag = 'tx_deadline'
    const startedAt = performance.now()
    const error = await rejectionOf(
      withQueryContext({ timeoutMs: 300 }, () =>
        db.transaction().execute(async (trx) => {
          await sql`insert into ledger values (2)`.execute(trx)
          await sql`select pg_sleep(30) as ${sql.raw(tag)}`.execute(trx)
        }),
      ),
    )
    expect(error).toBeInstanceOf(DeadlineExceededError)
    // The caller is not held past its deadline by the cancel and the rollback (issue 12): they finish
    // behind it, and the session is not reused before they have.
    expect(performance.now() - startedAt).toBeLessThan(300 + 150)
    await waitFor('the backend to stop', async () => (await activeWithTag(database, tag)).length === 0, 2_000)
    await waitFor('the rollback', async () => (await database.admin('select * from ledger')).length === 0, 2_000)
    await waitFor('the pool to return to rest', async () => dialect.poolStats().permits === 0)
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from ledger`.execute(db)
    expect(rows).toEqual([{ n: 0 }])
  })

  it('a failed statement inside db.transaction() still rolls back and frees the connection', async () => {
    const error = await rejectionOf(
      db.transaction().execute(async (trx) => {
        await sql`insert into ledger values (3)`.execute(trx)
        await sql`insert into ledger values (3)`.execute(trx)
      }),
    )
    expect(error.code).toBe('23505')
    expect(await database.admin('select * from ledger')).toEqual([])
    expect(dialect.poolStats().permits).toBe(0)
  })
})
