/**
 * Conformance of GovernedPostgresDialect with Kysely's PostgresDialect:
 * queries, results, types, raw SQL, pg errors, pinned connections, hooks and
 * destroy. Every case runs against both dialects on the same server.
 */
import {
  CompiledQuery,
  DeleteResult,
  Kysely,
  InsertResult,
  MergeResult,
  NoResultError,
  UpdateResult,
  sql,
  type ColumnType,
  type DatabaseConnection,
  type Generated,
} from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { useTestDatabase } from '../support/test-database.js'
import { createHarness, DIALECTS, expectPoolIdle, ParityLog, pgErrorShape, poolCounts, rejectionOf, type Harness } from './dialects.js'

interface PersonTable {
  id: Generated<number>
  email: string
  name: string | null
  created_at: ColumnType<Date, never, never>
}

interface PetTable {
  id: Generated<number>
  owner_id: number
  name: string
}

interface KitchenSinkTable {
  id: Generated<number>
  big: ColumnType<string | null, string | bigint | null, never>
  num: ColumnType<string | null, string | null, never>
  js: ColumnType<unknown, string | null, never>
  jb: ColumnType<unknown, string | null, never>
  ts: ColumnType<Date | null, Date | string | null, never>
  ints: number[] | null
  texts: (string | null)[] | null
  bin: Buffer | null
  flag: boolean | null
  nothing: string | null
}

interface Database {
  person: PersonTable
  pet: PetTable
  kitchen_sink: KitchenSinkTable
}

const database = useTestDatabase()
const parity = new ParityLog()

beforeAll(async () => {
  await database.admin(`
    create table person (
      id serial primary key,
      email text not null unique,
      name text,
      created_at timestamptz not null default now()
    );
    create table pet (
      id serial primary key,
      owner_id int not null references person (id),
      name text not null
    );
    create table kitchen_sink (
      id serial primary key,
      big int8, num numeric, js json, jb jsonb, ts timestamptz,
      ints int4[], texts text[], bin bytea, flag boolean, nothing text
    );
  `)
})

describe.each(DIALECTS)('%s', (dialect, makeDialect) => {
  let h: Harness<Database>

  beforeAll(() => {
    h = createHarness<Database>(database, makeDialect)
  })

  afterAll(async () => {
    await h.db.destroy()
  })

  beforeEach(async () => {
    await database.admin('truncate person, pet, kitchen_sink restart identity cascade')
  })

  async function seedPeople(): Promise<void> {
    await h.db
      .insertInto('person')
      .values([
        { email: 'ada@example.com', name: 'Ada' },
        { email: 'bob@example.com', name: 'Bob' },
        { email: 'cy@example.com', name: null },
      ])
      .execute()
  }

  describe('insert', () => {
    it('returns the inserted rows with `returning`', async () => {
      const rows = await h.db
        .insertInto('person')
        .values([
          { email: 'ada@example.com', name: 'Ada' },
          { email: 'bob@example.com', name: null },
        ])
        .returning(['id', 'email', 'name'])
        .execute()
      expect(rows).toEqual([
        { id: 1, email: 'ada@example.com', name: 'Ada' },
        { id: 2, email: 'bob@example.com', name: null },
      ])
      parity.record(dialect, 'insert.returning', rows)
    })

    it('reports numInsertedOrUpdatedRows without `returning`', async () => {
      const result = await h.db
        .insertInto('person')
        .values([{ email: 'ada@example.com' }, { email: 'bob@example.com' }])
        .executeTakeFirstOrThrow()
      expect(result).toBeInstanceOf(InsertResult)
      expect(result.numInsertedOrUpdatedRows).toBe(2n)
      expect(result.insertId).toBeUndefined()
      const all = await h.db.insertInto('person').values({ email: 'cy@example.com' }).execute()
      expect(all).toHaveLength(1)
      expect(all[0]?.numInsertedOrUpdatedRows).toBe(1n)
      parity.record(dialect, 'insert.result', [result.numInsertedOrUpdatedRows, result.insertId, all[0]?.numInsertedOrUpdatedRows])
    })

    it('counts `on conflict do update` and `do nothing` rows', async () => {
      await seedPeople()
      const updated = await h.db
        .insertInto('person')
        .values({ email: 'ada@example.com', name: 'Ada L.' })
        .onConflict((oc) => oc.column('email').doUpdateSet({ name: (eb) => eb.ref('excluded.name') }))
        .executeTakeFirstOrThrow()
      expect(updated.numInsertedOrUpdatedRows).toBe(1n)
      const skipped = await h.db
        .insertInto('person')
        .values({ email: 'bob@example.com', name: 'ignored' })
        .onConflict((oc) => oc.column('email').doNothing())
        .executeTakeFirstOrThrow()
      expect(skipped.numInsertedOrUpdatedRows).toBe(0n)
      const names = await h.db.selectFrom('person').select(['email', 'name']).orderBy('id').execute()
      expect(names).toEqual([
        { email: 'ada@example.com', name: 'Ada L.' },
        { email: 'bob@example.com', name: 'Bob' },
        { email: 'cy@example.com', name: null },
      ])
      parity.record(dialect, 'insert.onConflict', [updated.numInsertedOrUpdatedRows, skipped.numInsertedOrUpdatedRows, names])
    })

    it('reports 0 rows for an `insert ... select` that selects nothing', async () => {
      const result = await h.db
        .insertInto('person')
        .columns(['email'])
        .expression((eb) => eb.selectFrom('person').select('email').where('id', '<', 0))
        .executeTakeFirstOrThrow()
      expect(result.numInsertedOrUpdatedRows).toBe(0n)
    })
  })

  describe('select', () => {
    it('selects, filters and orders', async () => {
      await seedPeople()
      const rows = await h.db
        .selectFrom('person')
        .select(['id', 'email', 'name'])
        .where('name', 'is not', null)
        .orderBy('email', 'desc')
        .execute()
      expect(rows).toEqual([
        { id: 2, email: 'bob@example.com', name: 'Bob' },
        { id: 1, email: 'ada@example.com', name: 'Ada' },
      ])
      parity.record(dialect, 'select.rows', rows)
    })

    it('executeTakeFirst gives the first row or undefined', async () => {
      await seedPeople()
      const first = await h.db.selectFrom('person').select(['id', 'name']).orderBy('id').executeTakeFirst()
      expect(first).toEqual({ id: 1, name: 'Ada' })
      const none = await h.db.selectFrom('person').select('id').where('email', '=', 'nobody@example.com').executeTakeFirst()
      expect(none).toBeUndefined()
      parity.record(dialect, 'select.takeFirst', [first, none])
    })

    it('executeTakeFirstOrThrow throws NoResultError (or the given error) when nothing matches', async () => {
      await seedPeople()
      const found = await h.db.selectFrom('person').select('email').where('id', '=', 3).executeTakeFirstOrThrow()
      expect(found).toEqual({ email: 'cy@example.com' })
      const error = await rejectionOf(h.db.selectFrom('person').select('id').where('id', '=', 99).executeTakeFirstOrThrow())
      expect(error).toBeInstanceOf(NoResultError)
      expect((error as Error).message).toBe('no result')
      class NotFound extends Error {}
      const custom = await rejectionOf(
        h.db
          .selectFrom('person')
          .select('id')
          .where('id', '=', 99)
          .executeTakeFirstOrThrow(() => new NotFound('person 99')),
      )
      expect(custom).toBeInstanceOf(NotFound)
      expect((custom as Error).message).toBe('person 99')
    })

    it('returns count(*) as a string (int8)', async () => {
      await seedPeople()
      const { count } = await h.db.selectFrom('person').select((eb) => eb.fn.countAll().as('count')).executeTakeFirstOrThrow()
      expect(count).toBe('3')
      parity.record(dialect, 'select.count', count)
    })
  })

  describe('update', () => {
    it('reports numUpdatedRows and returns rows with `returning`', async () => {
      await seedPeople()
      const result = await h.db.updateTable('person').set({ name: 'X' }).where('id', '<=', 2).executeTakeFirstOrThrow()
      expect(result).toBeInstanceOf(UpdateResult)
      expect(result.numUpdatedRows).toBe(2n)
      expect(result.numChangedRows).toBeUndefined()
      const returned = await h.db.updateTable('person').set({ name: 'Cy' }).where('name', 'is', null).returning(['id', 'name']).execute()
      expect(returned).toEqual([{ id: 3, name: 'Cy' }])
      const none = await h.db.updateTable('person').set({ name: 'Z' }).where('id', '=', 99).executeTakeFirstOrThrow()
      expect(none.numUpdatedRows).toBe(0n)
      parity.record(dialect, 'update', [result.numUpdatedRows, result.numChangedRows, returned, none.numUpdatedRows])
    })
  })

  describe('delete', () => {
    it('reports numDeletedRows and returns rows with `returning`', async () => {
      await seedPeople()
      const returned = await h.db.deleteFrom('person').where('id', '=', 1).returning(['id', 'email']).execute()
      expect(returned).toEqual([{ id: 1, email: 'ada@example.com' }])
      const result = await h.db.deleteFrom('person').executeTakeFirstOrThrow()
      expect(result).toBeInstanceOf(DeleteResult)
      expect(result.numDeletedRows).toBe(2n)
      const again = await h.db.deleteFrom('person').executeTakeFirstOrThrow()
      expect(again.numDeletedRows).toBe(0n)
      parity.record(dialect, 'delete', [returned, result.numDeletedRows, again.numDeletedRows])
    })
  })

  describe('merge', () => {
    it('reports numChangedRows', async () => {
      await seedPeople()
      const result = await h.db
        .mergeInto('person as t')
        .using('person as s', 's.id', 't.id')
        .whenMatchedAnd('t.name', 'is', null)
        .thenUpdateSet({ name: 'merged' })
        .executeTakeFirstOrThrow()
      expect(result).toBeInstanceOf(MergeResult)
      expect(result.numChangedRows).toBe(1n)
      const merged = await h.db.selectFrom('person').select('name').where('id', '=', 3).executeTakeFirstOrThrow()
      expect(merged).toEqual({ name: 'merged' })
      parity.record(dialect, 'merge', result.numChangedRows)
    })
  })

  describe('types', () => {
    it('round-trips int8, numeric, json, jsonb, timestamptz, arrays, bytea, boolean and null', async () => {
      const ts = new Date('2024-02-29T12:34:56.789Z')
      const inserted = await h.db
        .insertInto('kitchen_sink')
        .values({
          big: '9007199254740993',
          num: '12.340',
          js: JSON.stringify({ a: [1, 2, { b: null }], s: 'x' }),
          jb: JSON.stringify({ z: 1, a: [true, 'y'] }),
          ts,
          ints: [1, -2, 3],
          texts: ['a', 'b c', null, 'd"e'],
          bin: Buffer.from([0, 1, 2, 255]),
          flag: true,
          nothing: null,
        })
        .returningAll()
        .executeTakeFirstOrThrow()
      const selected = await h.db.selectFrom('kitchen_sink').selectAll().executeTakeFirstOrThrow()
      for (const row of [inserted, selected]) {
        expect(row).toEqual({
          id: 1,
          big: '9007199254740993',
          num: '12.340',
          js: { a: [1, 2, { b: null }], s: 'x' },
          jb: { a: [true, 'y'], z: 1 },
          ts: new Date('2024-02-29T12:34:56.789Z'),
          ints: [1, -2, 3],
          texts: ['a', 'b c', null, 'd"e'],
          bin: Buffer.from([0, 1, 2, 255]),
          flag: true,
          nothing: null,
        })
        expect(typeof row.big).toBe('string')
        expect(row.ts).toBeInstanceOf(Date)
        expect(Buffer.isBuffer(row.bin)).toBe(true)
      }
      const empty = await h.db
        .insertInto('kitchen_sink')
        .values({ big: 5n, ints: [], texts: [] })
        .returning(['big', 'ints', 'texts', 'js', 'bin'])
        .executeTakeFirstOrThrow()
      expect(empty).toEqual({ big: '5', ints: [], texts: [], js: null, bin: null })
      parity.record(dialect, 'types', [selected, empty])
    })

    it('returns int8 expressions as strings and int4 as numbers', async () => {
      const { rows } = await sql<{
        big: string
        small: number
        float: number
        txt: string
      }>`select ${'9223372036854775807'}::int8 as big, 2147483647::int4 as small, 1.5::float8 as float, ${'ä€'}::text as txt`.execute(h.db)
      expect(rows).toEqual([{ big: '9223372036854775807', small: 2147483647, float: 1.5, txt: 'ä€' }])
    })
  })

  describe('raw sql', () => {
    it('runs `sql` templates with parameters', async () => {
      const result = await sql<{ sum: number; joined: string }>`select ${2}::int + ${3}::int as sum, ${'a'} || ${'b'} as joined`.execute(h.db)
      expect(result.rows).toEqual([{ sum: 5, joined: 'ab' }])
      expect(result.numAffectedRows).toBeUndefined()
      parity.record(dialect, 'sql.select', result)
    })

    it('reports numAffectedRows for raw writes and none for DDL', async () => {
      const inserted = await sql`insert into person (email) values (${'p@example.com'}), (${'q@example.com'})`.execute(h.db)
      expect(inserted.numAffectedRows).toBe(2n)
      expect(inserted.rows).toEqual([])
      const updated = await sql`update person set name = 'n'`.execute(h.db)
      expect(updated.numAffectedRows).toBe(2n)
      const deleted = await sql`delete from person where email = ${'p@example.com'}`.execute(h.db)
      expect(deleted.numAffectedRows).toBe(1n)
      const ddl = await sql`create temporary table if not exists raw_ddl_probe (x int)`.execute(h.db)
      expect(ddl).toEqual({ rows: [], numAffectedRows: undefined })
      parity.record(dialect, 'sql.writes', [inserted, updated, deleted, ddl])
    })

    it('runs CompiledQuery.raw through db.executeQuery', async () => {
      const result = await h.db.executeQuery<{ t: string; n: number }>(CompiledQuery.raw('select $1::text as t, $2::int as n', ['x', 7]))
      expect(result.rows).toEqual([{ t: 'x', n: 7 }])
      parity.record(dialect, 'sql.compiledRaw', result)
    })

    it('maps a bare COMMIT or ROLLBACK to a { command } row, as Kysely does', async () => {
      const commit = await sql`commit`.execute(h.db)
      expect(commit).toEqual({ rows: [{ command: 'COMMIT' }] })
      const rollback = await sql`rollback`.execute(h.db)
      expect(rollback).toEqual({ rows: [{ command: 'ROLLBACK' }] })
      parity.record(dialect, 'sql.commitRollback', [commit, rollback])
    })

    it('returns no rows for a multi-statement simple query', async () => {
      const result = await sql`select 1 as a; select 2 as b`.execute(h.db)
      expect(result).toEqual({ rows: [], numAffectedRows: undefined })
      parity.record(dialect, 'sql.multiStatement', result)
    })
  })

  describe('pg errors', () => {
    it('surfaces a unique violation (23505) with code, detail and constraint', async () => {
      await seedPeople()
      const error = await rejectionOf(h.db.insertInto('person').values({ email: 'ada@example.com' }).execute())
      expect(error).toBeInstanceOf(pg.DatabaseError)
      expect(pgErrorShape(error)).toMatchObject({
        code: '23505',
        message: 'duplicate key value violates unique constraint "person_email_key"',
        detail: 'Key (email)=(ada@example.com) already exists.',
        constraint: 'person_email_key',
        table: 'person',
        schema: 'public',
        severity: 'ERROR',
      })
      parity.record(dialect, 'error.23505', pgErrorShape(error))
    })

    it('surfaces a foreign key violation (23503) with code, detail and constraint', async () => {
      const error = await rejectionOf(h.db.insertInto('pet').values({ owner_id: 999, name: 'Rex' }).execute())
      expect(error).toBeInstanceOf(pg.DatabaseError)
      expect(pgErrorShape(error)).toMatchObject({
        code: '23503',
        message: 'insert or update on table "pet" violates foreign key constraint "pet_owner_id_fkey"',
        detail: 'Key (owner_id)=(999) is not present in table "person".',
        constraint: 'pet_owner_id_fkey',
        table: 'pet',
      })
      parity.record(dialect, 'error.23503', pgErrorShape(error))
    })

    it('surfaces a syntax error (42601) with its position', async () => {
      const error = await rejectionOf(sql`selec 1`.execute(h.db))
      expect(error).toBeInstanceOf(pg.DatabaseError)
      expect(pgErrorShape(error)).toMatchObject({
        code: '42601',
        message: 'syntax error at or near "selec"',
        position: '1',
        constraint: undefined,
      })
      parity.record(dialect, 'error.42601', pgErrorShape(error))
    })

    it('surfaces a not-null violation (23502) with its column', async () => {
      const error = await rejectionOf(sql`insert into pet (owner_id, name) values (null, 'Rex')`.execute(h.db))
      expect(error).toBeInstanceOf(pg.DatabaseError)
      expect(pgErrorShape(error)).toMatchObject({
        code: '23502',
        message: 'null value in column "owner_id" of relation "pet" violates not-null constraint',
        detail: 'Failing row contains (1, null, Rex).',
        column: 'owner_id',
        table: 'pet',
      })
      parity.record(dialect, 'error.23502', pgErrorShape(error))
    })

    it('extends the pg error stack with the caller frames, as Kysely does', async () => {
      const error = await rejectionOf(sql`select 1 / 0`.execute(h.db))
      expect(error).toBeInstanceOf(pg.DatabaseError)
      // pg builds the error in its protocol parser; Kysely's PostgresConnection
      // appends the stack of the executeQuery call so that users see where the query came from.
      expect((error as Error).stack).toContain('queries.test.ts')
      parity.record(dialect, 'error.stackHasCaller', (error as Error).stack?.includes('queries.test.ts'))
    })

    it('surfaces a statement_timeout the caller set as the pg error 57014', async () => {
      const [session, local] = await h.db.connection().execute(async (conn) => {
        await sql`set statement_timeout = '100ms'`.execute(conn)
        try {
          return [
            await rejectionOf(sql`select pg_sleep(2)`.execute(conn)),
            await rejectionOf(
              conn.transaction().execute(async (trx) => {
                await sql`set local statement_timeout = '150ms'`.execute(trx)
                await sql`select pg_sleep(2)`.execute(trx)
              }),
            ),
          ]
        } finally {
          await sql`reset statement_timeout`.execute(conn)
        }
      })
      for (const error of [session, local]) {
        expect(error).toBeInstanceOf(pg.DatabaseError)
        expect(pgErrorShape(error)).toMatchObject({ code: '57014', message: 'canceling statement due to statement timeout' })
      }
      await expectPoolIdle(h)
      parity.record(dialect, 'error.57014', [pgErrorShape(session), pgErrorShape(local)])
    })

    it('keeps a statement_timeout the caller set on a pinned connection', async () => {
      // Under the default policy every statement has the same budget, so a
      // governed connection has no reason to SET statement_timeout again.
      const seen = await h.db.connection().execute(async (conn) => {
        await sql`set statement_timeout = '5s'`.execute(conn)
        try {
          const values = new Set<string>()
          for (let i = 0; i < 200; i++) {
            const { rows } = await sql<{ statement_timeout: string }>`show statement_timeout`.execute(conn)
            values.add(rows[0]!.statement_timeout)
          }
          return [...values]
        } finally {
          await sql`reset statement_timeout`.execute(conn)
        }
      })
      expect(seen).toEqual(['5s'])
      parity.record(dialect, 'callerStatementTimeout', seen)
    })

    it('surfaces a lock_timeout (55P03) as the pg error', async () => {
      await seedPeople()
      const lockHolder = await h.db.startTransaction().execute()
      try {
        await lockHolder.updateTable('person').set({ name: 'locked' }).where('id', '=', 1).execute()
        const error = await rejectionOf(
          h.db.transaction().execute(async (trx) => {
            await sql`set local lock_timeout = '100ms'`.execute(trx)
            await trx.updateTable('person').set({ name: 'blocked' }).where('id', '=', 1).execute()
          }),
        )
        expect(error).toBeInstanceOf(pg.DatabaseError)
        expect(pgErrorShape(error)).toMatchObject({ code: '55P03', message: 'canceling statement due to lock timeout' })
        parity.record(dialect, 'error.55P03', pgErrorShape(error))
      } finally {
        await lockHolder.rollback().execute()
      }
      await expectPoolIdle(h)
    })

    it('keeps the connection usable after an error', async () => {
      for (let i = 0; i < 6; i++) {
        await expect(sql`select 1 / 0`.execute(h.db)).rejects.toMatchObject({ code: '22012' })
      }
      const { rows } = await sql<{ ok: number }>`select 1 as ok`.execute(h.db)
      expect(rows).toEqual([{ ok: 1 }])
      await expectPoolIdle(h)
    })
  })

  describe('connections', () => {
    it('db.connection().execute pins one backend for every statement', async () => {
      const outside: number[] = []
      const pids = await h.db.connection().execute(async (conn) => {
        const seen: number[] = []
        const pidOf = async (): Promise<number> => (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(conn)).rows[0]!.pid
        seen.push(await pidOf())
        await sql`create temporary table pinned_probe (x int)`.execute(conn)
        await sql`insert into pinned_probe values (1), (2)`.execute(conn)
        seen.push(...(await Promise.all([pidOf(), pidOf(), pidOf()])))
        // While the connection is pinned, other work gets another backend.
        outside.push((await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(h.db)).rows[0]!.pid)
        const { rows } = await sql<{ n: number }>`select count(*)::int as n from pinned_probe`.execute(conn)
        expect(rows).toEqual([{ n: 2 }])
        seen.push(await pidOf())
        await sql`drop table pinned_probe`.execute(conn)
        return seen
      })
      expect(pids).toHaveLength(5)
      expect(new Set(pids).size).toBe(1)
      expect(outside).toHaveLength(1)
      expect(outside[0]).not.toBe(pids[0])
      await expectPoolIdle(h)
    })

    it('calls onCreateConnection once per new connection and onReserveConnection per checkout', async () => {
      const created: number[] = []
      let reserved = 0
      const hooked = createHarness<Database>(database, makeDialect, {
        pool: { max: 1 },
        hooks: {
          onCreateConnection: async (connection: DatabaseConnection) => {
            const { rows } = await connection.executeQuery<{ pid: number }>(CompiledQuery.raw('select pg_backend_pid() as pid'))
            created.push(rows[0]!.pid)
            await connection.executeQuery(CompiledQuery.raw(`set application_name = 'conformance-hooked'`))
          },
          onReserveConnection: async () => {
            reserved++
          },
        },
      })
      try {
        for (let i = 0; i < 3; i++) {
          const { rows } = await sql<{ name: string; pid: number }>`select current_setting('application_name') as name, pg_backend_pid() as pid`.execute(
            hooked.db,
          )
          expect(rows).toEqual([{ name: 'conformance-hooked', pid: created[0] }])
        }
        expect(created).toHaveLength(1)
        expect(reserved).toBe(3)
        await expectPoolIdle(hooked)
        parity.record(dialect, 'hooks', [created.length, reserved])
      } finally {
        await hooked.db.destroy()
      }
    })

    it('runs more concurrent queries than the pool has connections', async () => {
      const peak = { total: 0 }
      const results = await Promise.all(
        Array.from({ length: 24 }, async (_, i) => {
          const { rows } = await sql<{ i: number }>`select ${i}::int as i, pg_sleep(0.02)`.execute(h.db)
          peak.total = Math.max(peak.total, h.pool.totalCount)
          return rows[0]?.i
        }),
      )
      expect(results).toEqual(Array.from({ length: 24 }, (_, i) => i))
      expect(peak.total).toBeLessThanOrEqual(4)
      await expectPoolIdle(h)
    })

    it('accepts a function that makes the pool at the first query', async () => {
      const pool = database.pool({ max: 1 })
      let calls = 0
      const lazyDialect = makeDialect({
        pool: async () => {
          calls++
          return pool
        },
      })
      const lazy = new Kysely<Database>({ dialect: lazyDialect })
      try {
        expect(calls).toBe(0)
        const { rows } = await sql<{ one: number }>`select 1 as one`.execute(lazy)
        expect(rows).toEqual([{ one: 1 }])
        await sql`select 2`.execute(lazy)
        expect(calls).toBe(1)
        await expectPoolIdle({ counts: () => poolCounts(lazyDialect, pool) })
      } finally {
        await lazy.destroy()
      }
      expect(pool.ended).toBe(true)
    })

    it('db.destroy() ends the pool, and a query afterwards fails cleanly', async () => {
      const applicationName = `conformance-destroy-${dialect}`
      const own = createHarness<Database>(database, makeDialect, { pool: { max: 2, application_name: applicationName } })
      await Promise.all([sql`select 1`.execute(own.db), sql`select 2`.execute(own.db)])
      expect(own.pool.totalCount).toBeGreaterThan(0)
      await own.db.destroy()
      expect(own.pool.ended).toBe(true)
      expect(own.pool.totalCount).toBe(0)
      const error = await rejectionOf(own.db.selectFrom('person').selectAll().execute())
      expect(error).toBeInstanceOf(Error)
      expect((error as Error).message).toBe('driver has already been destroyed')
      const rawError = await rejectionOf(sql`select 1`.execute(own.db))
      expect((rawError as Error).message).toBe('driver has already been destroyed')
      await expect(own.db.destroy()).resolves.toBeUndefined()
      await vi.waitFor(
        async () => {
          const rows = await database.admin<{ n: number }>(`select count(*)::int as n from pg_stat_activity where application_name = $1`, [applicationName])
          expect(rows).toEqual([{ n: 0 }])
        },
        { timeout: 3_000, interval: 50 },
      )
      parity.record(dialect, 'destroy', [(error as Error).name, (error as Error).message])
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
