import { sql, type Kysely } from 'kysely'
import { afterAll, describe, expect, it } from 'vitest'
import { withQueryContext, type StatementTimeoutEvent } from '../../src/index.js'
import { governed } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()
const { db, dialect } = governed(database, { max: 1 }, { defaultTimeoutMs: null })
const sets: StatementTimeoutEvent[] = []
dialect.events.on('statementTimeout', (event) => sets.push(event))
afterAll(() => db.destroy())

async function show(executor: Kysely<any>): Promise<string> {
  const { rows } = await sql<{ statement_timeout: string }>`show statement_timeout`.execute(executor)
  return rows[0]?.statement_timeout as string
}

function within<T>(timeoutMs: number, fn: () => Promise<T>): Promise<T> {
  return withQueryContext({ timeoutMs }, fn)
}

describe('statement_timeout ladder', () => {
  it('sets the step at or above the remaining budget, and only when the step changes', async () => {
    expect(await show(db)).toBe('0')
    sets.length = 0
    expect(await within(3_000, () => show(db))).toBe('5s')
    expect(await within(400, () => show(db))).toBe('500ms')
    expect(await within(90, () => show(db))).toBe('100ms')
    expect(await within(45_000, () => show(db))).toBe('1min')
    expect(sets.map((event) => event.valueMs)).toEqual([5_000, 500, 100, 60_000])
    sets.length = 0
    // Steady traffic: the same step, no SET at all.
    for (let i = 0; i < 200; i++) await within(3_000 + (i % 7), () => sql`select 1`.execute(db))
    expect(sets.map((event) => event.valueMs)).toEqual([5_000])
    // No deadline: back to the server's default.
    sets.length = 0
    expect(await show(db)).toBe('0')
    expect(sets.map((event) => event.valueMs)).toEqual(['default'])
  })

  it('uses SET LOCAL inside a transaction and keeps the cache true across commit and rollback', async () => {
    await within(3_000, () => show(db)) // session at 5 s
    for (const ending of ['commit', 'rollback'] as const) {
      sets.length = 0
      const inside = await within(400, () =>
        db
          .transaction()
          .execute(async (trx) => {
            const value = await show(trx)
            if (ending === 'rollback') throw Object.assign(new Error('roll back'), { value })
            return value
          })
          .catch((error: { value: string }) => error.value),
      )
      expect(inside).toBe('500ms')
      expect(sets).toEqual([expect.objectContaining({ valueMs: 500, local: true })])
      sets.length = 0
      // After the transaction the session value (5 s) is back and the cache knows it: no SET.
      expect(await within(3_000, () => show(db))).toBe('5s')
      expect(sets).toEqual([])
    }
  })

  it('re-sets after ROLLBACK TO SAVEPOINT undid a SET LOCAL', async () => {
    await within(3_000, () => show(db))
    const trx = await db.startTransaction().execute()
    const seen: string[] = []
    const savepoint = await trx.savepoint('before_short').execute()
    seen.push(await within(400, () => show(savepoint)))
    const rolledBack = await savepoint.rollbackToSavepoint('before_short').execute()
    seen.push(await show(rolledBack))
    seen.push(await within(400, () => show(rolledBack)))
    await rolledBack.commit().execute()
    const values = seen
    // Without a context the statement has no deadline: server default inside the transaction.
    expect(values).toEqual(['500ms', '0', '500ms'])
  })

  it("never sends the caller's number: a fractional budget runs with the ladder step we computed", async () => {
    await within(3_000, () => show(db)) // session at 5 s
    sets.length = 0
    // Neither 1234.5678 nor its rounding reaches the server: the step above it does.
    expect(await within(1_234.5678, () => show(db))).toBe('2s')
    expect(sets).toEqual([expect.objectContaining({ valueMs: 2_000, local: false })])
  })
})

describe('statement_timeout under the default policy', () => {
  it('sends one SET per connection for steady traffic, however many statements run', async () => {
    const steady = governed(database, { max: 3 })
    const events: StatementTimeoutEvent[] = []
    steady.dialect.events.on('statementTimeout', (event) => events.push(event))
    try {
      await Promise.all(
        Array.from({ length: 3 }, async () => {
          for (let i = 0; i < 300; i++) await sql`select 1`.execute(steady.db)
        }),
      )
      expect(events.length).toBeLessThanOrEqual(steady.pool.totalCount)
      expect(new Set(events.map((event) => event.valueMs))).toEqual(new Set([30_000]))
    } finally {
      await steady.db.destroy()
    }
  })
})
