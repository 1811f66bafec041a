/**
 * Conformance of GovernedPostgresDialect with Kysely's PostgresDialect:
 * transactions, isolation levels, access modes, controlled transactions,
 * savepoints and a COMMIT after a failed statement.
 */
import { AbortedTransactionError, sql, type Generated, type IsolationLevel, type Kysely } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { useTestDatabase } from '../support/test-database.js'
import { createHarness, DIALECTS, expectPoolIdle, ParityLog, pgErrorShape, rejectionOf, type Harness } from './dialects.js'

interface ItemTable {
  id: Generated<number>
  label: string
}

interface DoctorTable {
  id: number
  on_call: boolean
}

interface Database {
  item: ItemTable
  doctor: DoctorTable
}

const ISOLATION_LEVELS: readonly IsolationLevel[] = ['read uncommitted', 'read committed', 'repeatable read', 'serializable']

const database = useTestDatabase()
const parity = new ParityLog()

beforeAll(async () => {
  await database.admin(`
    create table item (id serial primary key, label text not null unique);
    create table doctor (id int primary key, on_call boolean not null);
  `)
})

async function labels(db: Kysely<Database>): Promise<string[]> {
  const rows = await db.selectFrom('item').select('label').orderBy('id').execute()
  return rows.map((row) => row.label)
}

async function show(db: Kysely<Database>, setting: 'transaction_isolation' | 'transaction_read_only'): Promise<string> {
  const { rows } = await sql<Record<string, string>>`show ${sql.raw(setting)}`.execute(db)
  return rows[0]![setting]!
}

describe.each(DIALECTS)('%s', (dialect, makeDialect) => {
  let h: Harness<Database>

  beforeAll(() => {
    h = createHarness<Database>(database, makeDialect)
  })

  afterAll(async () => {
    await h.db.destroy()
  })

  beforeEach(async () => {
    await database.admin('truncate item, doctor restart identity')
  })

  describe('transaction().execute', () => {
    it('commits and returns the callback result', async () => {
      const result = await h.db.transaction().execute(async (trx) => {
        await trx.insertInto('item').values([{ label: 'a' }, { label: 'b' }]).execute()
        // Not visible outside until commit.
        expect(await labels(h.db)).toEqual([])
        return trx.selectFrom('item').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow()
      })
      expect(result).toEqual({ n: '2' })
      expect(await labels(h.db)).toEqual(['a', 'b'])
      await expectPoolIdle(h)
    })

    it('rolls back when the callback throws, and rethrows the same error', async () => {
      const boom = new Error('boom')
      const error = await rejectionOf(
        h.db.transaction().execute(async (trx) => {
          await trx.insertInto('item').values({ label: 'doomed' }).execute()
          throw boom
        }),
      )
      expect(error).toBe(boom)
      expect(await labels(h.db)).toEqual([])
      await expectPoolIdle(h)
    })

    it('rolls back when a statement fails, and rethrows the pg error', async () => {
      await h.db.insertInto('item').values({ label: 'taken' }).execute()
      const error = await rejectionOf(
        h.db.transaction().execute(async (trx) => {
          await trx.insertInto('item').values({ label: 'fresh' }).execute()
          await trx.insertInto('item').values({ label: 'taken' }).execute()
        }),
      )
      expect(error).toBeInstanceOf(pg.DatabaseError)
      expect(pgErrorShape(error)).toMatchObject({ code: '23505', constraint: 'item_label_key', detail: 'Key (label)=(taken) already exists.' })
      expect(await labels(h.db)).toEqual(['taken'])
      await expectPoolIdle(h)
      parity.record(dialect, 'trx.failedStatement', pgErrorShape(error))
    })

    it.each(ISOLATION_LEVELS)('runs at isolation level %s', async (level) => {
      const seen = await h.db
        .transaction()
        .setIsolationLevel(level)
        .execute(async (trx) => ({ isolation: await show(trx, 'transaction_isolation'), readOnly: await show(trx, 'transaction_read_only') }))
      expect(seen).toEqual({ isolation: level, readOnly: 'off' })
      // The setting was the transaction's only.
      expect(await show(h.db, 'transaction_isolation')).toBe('read committed')
      parity.record(dialect, `trx.isolation.${level}`, seen)
    })

    it("'read only' rejects writes with 25006 and rolls back", async () => {
      const error = await rejectionOf(
        h.db
          .transaction()
          .setAccessMode('read only')
          .execute(async (trx) => {
            expect(await show(trx, 'transaction_read_only')).toBe('on')
            expect(await labels(trx)).toEqual([])
            await trx.insertInto('item').values({ label: 'nope' }).execute()
          }),
      )
      expect(error).toBeInstanceOf(pg.DatabaseError)
      expect(pgErrorShape(error)).toMatchObject({ code: '25006', message: 'cannot execute INSERT in a read-only transaction' })
      expect(await labels(h.db)).toEqual([])
      await expectPoolIdle(h)
      parity.record(dialect, 'trx.readOnly', pgErrorShape(error))
    })

    it("'read write' allows writes", async () => {
      const readOnly = await h.db
        .transaction()
        .setAccessMode('read write')
        .execute(async (trx) => {
          await trx.insertInto('item').values({ label: 'rw' }).execute()
          return show(trx, 'transaction_read_only')
        })
      expect(readOnly).toBe('off')
      expect(await labels(h.db)).toEqual(['rw'])
    })

    it('combines an isolation level with an access mode', async () => {
      const seen = await h.db
        .transaction()
        .setIsolationLevel('serializable')
        .setAccessMode('read only')
        .execute(async (trx) => [await show(trx, 'transaction_isolation'), await show(trx, 'transaction_read_only')])
      expect(seen).toEqual(['serializable', 'on'])
    })

    it('accepts SET TRANSACTION as the first statement of a transaction, on a fresh connection', async () => {
      const fresh = createHarness<Database>(database, makeDialect, { pool: { max: 1 } })
      try {
        const seen = await fresh.db.transaction().execute(async (trx) => {
          await sql`set transaction isolation level repeatable read`.execute(trx)
          return show(trx, 'transaction_isolation')
        })
        expect(seen).toBe('repeatable read')
      } finally {
        await fresh.db.destroy()
      }
    })

    it('keeps a transaction on one backend', async () => {
      const pids = await h.db.transaction().execute(async (trx) => {
        const pid = async (): Promise<number> => (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx)).rows[0]!.pid
        return Promise.all([pid(), pid(), pid()])
      })
      expect(new Set(pids).size).toBe(1)
    })
  })

  describe('COMMIT after a failed statement', () => {
    it('transaction().execute rejects with AbortedTransactionError and keeps nothing', async () => {
      await h.db.insertInto('item').values({ label: 'taken' }).execute()
      let statementError: unknown
      let afterFailure: unknown
      const error = await rejectionOf(
        h.db.transaction().execute(async (trx) => {
          await trx.insertInto('item').values({ label: 'lost' }).execute()
          statementError = await rejectionOf(trx.insertInto('item').values({ label: 'taken' }).execute())
          afterFailure = await rejectionOf(trx.selectFrom('item').selectAll().execute())
          return 'callback result'
        }),
      )
      expect(error).toBeInstanceOf(AbortedTransactionError)
      expect((error as Error).message).toBe('Transaction was rolled back instead of committed')
      expect(statementError).toMatchObject({ code: '23505' })
      expect(afterFailure).toBeInstanceOf(pg.DatabaseError)
      expect(pgErrorShape(afterFailure)).toMatchObject({
        code: '25P02',
        message: 'current transaction is aborted, commands ignored until end of transaction block',
      })
      expect(await labels(h.db)).toEqual(['taken'])
      await expectPoolIdle(h)
      parity.record(dialect, 'abortedCommit.execute', [(error as Error).name, (error as Error).message, pgErrorShape(afterFailure)])
    })

    it('a controlled transaction commit rejects with AbortedTransactionError; rollback is then a no-op', async () => {
      await h.db.insertInto('item').values({ label: 'taken' }).execute()
      const trx = await h.db.startTransaction().execute()
      await trx.insertInto('item').values({ label: 'lost' }).execute()
      await expect(trx.insertInto('item').values({ label: 'taken' }).execute()).rejects.toMatchObject({ code: '23505' })
      const error = await rejectionOf(trx.commit().execute())
      expect(error).toBeInstanceOf(AbortedTransactionError)
      expect(trx.isCommitted).toBe(false)
      expect(trx.isRolledBack).toBe(true)
      await expect(trx.rollback().execute()).resolves.toBeUndefined()
      const reuse = await rejectionOf(trx.selectFrom('item').selectAll().execute())
      expect((reuse as Error).message).toBe('Transaction is already rolled back')
      expect(await labels(h.db)).toEqual(['taken'])
      await expectPoolIdle(h)
      parity.record(dialect, 'abortedCommit.controlled', [(error as Error).name, trx.isCommitted, trx.isRolledBack, (reuse as Error).message])
    })
  })

  describe('controlled transactions', () => {
    it('commits a startTransaction() with an isolation level', async () => {
      const trx = await h.db.startTransaction().setIsolationLevel('repeatable read').setAccessMode('read write').execute()
      expect(await show(trx, 'transaction_isolation')).toBe('repeatable read')
      await trx.insertInto('item').values({ label: 'ct' }).execute()
      expect(await labels(h.db)).toEqual([])
      expect(h.counts().total - h.counts().idle).toBeGreaterThanOrEqual(1)
      await trx.commit().execute()
      expect(trx.isCommitted).toBe(true)
      expect(trx.isRolledBack).toBe(false)
      expect(await labels(h.db)).toEqual(['ct'])
      const reuse = await rejectionOf(trx.selectFrom('item').selectAll().execute())
      expect((reuse as Error).message).toBe('Transaction is already committed')
      await expectPoolIdle(h)
    })

    it('rolls back a startTransaction()', async () => {
      const trx = await h.db.startTransaction().execute()
      await trx.insertInto('item').values({ label: 'gone' }).execute()
      await trx.rollback().execute()
      expect(trx.isRolledBack).toBe(true)
      expect(trx.isCommitted).toBe(false)
      expect(await labels(h.db)).toEqual([])
      await expectPoolIdle(h)
    })

    it('savepoint, rollbackToSavepoint and releaseSavepoint have their effects', async () => {
      const trx = await h.db.startTransaction().execute()
      await trx.insertInto('item').values({ label: 'a' }).execute()
      const sp1 = await trx.savepoint('sp1').execute()
      await sp1.insertInto('item').values({ label: 'b' }).execute()
      expect(await labels(sp1)).toEqual(['a', 'b'])
      const back = await sp1.rollbackToSavepoint('sp1').execute()
      expect(await labels(back)).toEqual(['a'])
      const sp2 = await back.savepoint('sp2').execute()
      await sp2.insertInto('item').values({ label: 'c' }).execute()
      const released = await sp2.releaseSavepoint('sp2').execute()
      expect(await labels(released)).toEqual(['a', 'c'])
      // The released savepoint is gone on the server.
      const error = await rejectionOf(sql`rollback to savepoint sp2`.execute(released))
      expect(pgErrorShape(error)).toMatchObject({ code: '3B001', message: 'savepoint "sp2" does not exist' })
      await released.rollback().execute()
      expect(await labels(h.db)).toEqual([])

      const again = await h.db.startTransaction().execute()
      await again.insertInto('item').values({ label: 'x' }).execute()
      const sp = await again.savepoint('sp').execute()
      await sp.insertInto('item').values({ label: 'y' }).execute()
      await (await sp.releaseSavepoint('sp').execute()).commit().execute()
      expect(await labels(h.db)).toEqual(['x', 'y'])
      await expectPoolIdle(h)
      parity.record(dialect, 'savepoints.releasedError', pgErrorShape(error))
    })

    it('recovers from a failed statement with rollbackToSavepoint and commits', async () => {
      await h.db.insertInto('item').values({ label: 'taken' }).execute()
      const trx = await h.db.startTransaction().execute()
      await trx.insertInto('item').values({ label: 'kept' }).execute()
      const sp = await trx.savepoint('before_dup').execute()
      await expect(sp.insertInto('item').values({ label: 'taken' }).execute()).rejects.toMatchObject({ code: '23505' })
      await expect(sp.selectFrom('item').selectAll().execute()).rejects.toMatchObject({ code: '25P02' })
      const recovered = await sp.rollbackToSavepoint('before_dup').execute()
      await recovered.insertInto('item').values({ label: 'after' }).execute()
      await recovered.commit().execute()
      expect(recovered.isCommitted).toBe(true)
      expect(await labels(h.db)).toEqual(['taken', 'kept', 'after'])
      await expectPoolIdle(h)
    })

    it('sanitises savepoint names as identifiers', async () => {
      const name = 'Odd "Name"; drop table item'
      const trx = await h.db.startTransaction().execute()
      const sp = await trx.savepoint(name).execute()
      await sp.insertInto('item').values({ label: 'rolled' }).execute()
      const back = await sp.rollbackToSavepoint(name).execute()
      await back.insertInto('item').values({ label: 'stays' }).execute()
      await back.commit().execute()
      expect(await labels(h.db)).toEqual(['stays'])
      expect((await database.admin<{ n: number }>(`select count(*)::int as n from pg_tables where tablename = 'item'`))[0]?.n).toBe(1)
    })

    it('surfaces a serialization failure (40001) at COMMIT and can still roll back', async () => {
      await h.db.insertInto('doctor').values([{ id: 1, on_call: true }, { id: 2, on_call: true }]).execute()
      const t1 = await h.db.startTransaction().setIsolationLevel('serializable').execute()
      const t2 = await h.db.startTransaction().setIsolationLevel('serializable').execute()
      const onCall = async (trx: Kysely<Database>): Promise<string> =>
        (await trx.selectFrom('doctor').select((eb) => eb.fn.countAll<string>().as('n')).where('on_call', '=', true).executeTakeFirstOrThrow()).n
      expect(await onCall(t1)).toBe('2')
      expect(await onCall(t2)).toBe('2')
      await t1.updateTable('doctor').set({ on_call: false }).where('id', '=', 1).execute()
      await t2.updateTable('doctor').set({ on_call: false }).where('id', '=', 2).execute()
      await t1.commit().execute()
      const error = await rejectionOf(t2.commit().execute())
      expect(error).toBeInstanceOf(pg.DatabaseError)
      expect(pgErrorShape(error)).toMatchObject({ code: '40001', message: 'could not serialize access due to read/write dependencies among transactions' })
      expect(t2.isCommitted).toBe(false)
      expect(t2.isRolledBack).toBe(false)
      await t2.rollback().execute()
      expect(t2.isRolledBack).toBe(true)
      const rows = await h.db.selectFrom('doctor').select(['id', 'on_call']).orderBy('id').execute()
      expect(rows).toEqual([
        { id: 1, on_call: false },
        { id: 2, on_call: true },
      ])
      await expectPoolIdle(h)
      parity.record(dialect, 'serializationFailure', [pgErrorShape(error).code, pgErrorShape(error).message, t2.isRolledBack])
    })
  })

  it('leaves its pool idle after every case', async () => {
    expect(h.pool.totalCount).toBeGreaterThan(0)
    await expectPoolIdle(h)
  })
})

describe('parity', () => {
  it('both dialects recorded the same observations', () => {
    parity.expectParity()
  })
})
