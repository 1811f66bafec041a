/**
 * Conformance of GovernedPostgresDialect with Kysely's PostgresDialect:
 * `.stream()` through pg-cursor — chunk sizes, early exit, errors, and the
 * error when no cursor is configured.
 */
import { sql, type PostgresCursor, type PostgresCursorConstructor } from 'kysely'
import pg from 'pg'
import Cursor from 'pg-cursor'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { useTestDatabase } from '../support/test-database.js'
import { createHarness, DIALECTS, expectPoolIdle, ParityLog, pgErrorShape, rejectionOf, type Harness } from './dialects.js'

interface Database {
  num: { n: number }
}

/** What the dialect asked of pg-cursor. */
interface CursorLog {
  created: { sql: string; parameters: unknown[] }[]
  reads: number[]
  closes: number
}

/** pg-cursor, recording each construction, read(chunkSize) and close. */
function recordingCursor(log: CursorLog): PostgresCursorConstructor {
  return class RecordingCursor<T> extends Cursor<T> implements PostgresCursor<T> {
    constructor(text: string, values: unknown[]) {
      super(text, values)
      log.created.push({ sql: text, parameters: [...values] })
    }

    override read(maxRows: number): Promise<T[]>
    override read(maxRows: number, callback: Cursor.ResultCallback<T>): undefined
    override read(maxRows: number, callback?: Cursor.ResultCallback<T>): Promise<T[]> | undefined {
      log.reads.push(maxRows)
      return callback ? super.read(maxRows, callback) : super.read(maxRows)
    }

    override close(): Promise<void>
    override close(callback: (err: Error) => void): undefined
    override close(callback?: (err: Error) => void): Promise<void> | undefined {
      log.closes++
      return callback ? super.close(callback) : super.close()
    }
  }
}

const NO_CURSOR_MESSAGE = "`cursor` is not present in your postgres dialect config. It's required to make streaming work in postgres."

const database = useTestDatabase()
const parity = new ParityLog()

beforeAll(async () => {
  await database.admin(`create table num (n int primary key); insert into num select generate_series(1, 10);`)
})

describe.each(DIALECTS)('%s', (dialect, makeDialect) => {
  const log: CursorLog = { created: [], reads: [], closes: 0 }
  let h: Harness<Database>
  let noCursor: Harness<Database>

  beforeAll(() => {
    // One connection: a leaked or destroyed one shows at once.
    h = createHarness<Database>(database, makeDialect, { pool: { max: 1 }, cursor: recordingCursor(log) })
    noCursor = createHarness<Database>(database, makeDialect, { pool: { max: 1 }, cursor: null })
  })

  afterAll(async () => {
    await h.db.destroy()
    await noCursor.db.destroy()
  })

  beforeEach(() => {
    log.created.length = 0
    log.reads.length = 0
    log.closes = 0
  })

  async function backendPid(): Promise<number> {
    return (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(h.db)).rows[0]!.pid
  }

  it('streams every row, reading chunkSize rows at a time', async () => {
    const rows: number[] = []
    for await (const row of h.db.selectFrom('num').select('n').where('n', '>', 0).orderBy('n').stream(3)) rows.push(row.n)
    expect(rows).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    expect(log.created).toEqual([{ sql: 'select "n" from "num" where "n" > $1 order by "n"', parameters: [0] }])
    // 3 + 3 + 3 + 1, then an empty read ends the stream.
    expect(log.reads).toEqual([3, 3, 3, 3, 3])
    expect(log.closes).toBe(1)
    await expectPoolIdle(h)
    parity.record(dialect, 'stream.chunk3', { rows, log: structuredClone(log) })
  })

  it('reads 100 rows at a time by default', async () => {
    const rows: number[] = []
    for await (const row of h.db.selectFrom('num').select('n').orderBy('n').stream()) rows.push(row.n)
    expect(rows).toHaveLength(10)
    expect(log.reads).toEqual([100, 100])
    expect(log.closes).toBe(1)
    parity.record(dialect, 'stream.default', log.reads.slice())
  })

  it('closes the cursor and returns the connection on an early break', async () => {
    const pidBefore = await backendPid()
    const rows: number[] = []
    for await (const row of h.db.selectFrom('num').select('n').orderBy('n').stream(2)) {
      rows.push(row.n)
      if (rows.length === 1) break
    }
    expect(rows).toEqual([1])
    expect(log.reads).toEqual([2])
    expect(log.closes).toBe(1)
    await expectPoolIdle(h)
    expect(h.counts()).toEqual({ total: 1, idle: 1, waiting: 0 })
    // The same backend is reused: the connection was returned, not destroyed.
    expect(await backendPid()).toBe(pidBefore)
    parity.record(dialect, 'stream.break', structuredClone(log))
  })

  it('closes the cursor and returns the connection when the consumer throws', async () => {
    const pidBefore = await backendPid()
    const oops = new Error('consumer failed')
    const error = await rejectionOf(
      (async () => {
        for await (const row of h.db.selectFrom('num').select('n').orderBy('n').stream(4)) {
          if (row.n === 6) throw oops
        }
      })(),
    )
    expect(error).toBe(oops)
    expect(log.reads).toEqual([4, 4])
    expect(log.closes).toBe(1)
    await expectPoolIdle(h)
    expect(h.pool.totalCount).toBe(1)
    expect(await backendPid()).toBe(pidBefore)
  })

  it('surfaces an error raised mid-stream and returns the connection', async () => {
    const rows: number[] = []
    const error = await rejectionOf(
      (async () => {
        // No sort: the division runs row by row as the cursor fetches (a heap scan, in insertion order).
        for await (const row of h.db.selectFrom('num').select(sql<number>`10 / (5 - n)`.as('q')).stream(2)) rows.push(row.q)
      })(),
    )
    expect(rows).toEqual([2, 3, 5, 10])
    expect(error).toBeInstanceOf(pg.DatabaseError)
    expect(pgErrorShape(error)).toMatchObject({ code: '22012', message: 'division by zero' })
    expect(log.reads).toEqual([2, 2, 2])
    await expectPoolIdle(h)
    const { rows: after } = await sql<{ ok: number }>`select 1 as ok`.execute(h.db)
    expect(after).toEqual([{ ok: 1 }])
    parity.record(dialect, 'stream.error', { rows, error: pgErrorShape(error), reads: log.reads.slice() })
  })

  it('surfaces a statement_timeout the caller set, hit during a cursor read, as the pg error 57014', async () => {
    const rows: number[] = []
    const error = await h.db.connection().execute(async (conn) => {
      await sql`set statement_timeout = '100ms'`.execute(conn)
      try {
        return await rejectionOf(
          (async () => {
            const slow = conn.selectFrom('num').select(['n', sql<string>`pg_sleep(0.3)::text`.as('slept')]).where('n', '<=', 3)
            for await (const row of slow.stream(1)) rows.push(row.n)
          })(),
        )
      } finally {
        await sql`reset statement_timeout`.execute(conn)
      }
    })
    expect(rows).toEqual([])
    expect(error).toBeInstanceOf(pg.DatabaseError)
    expect(pgErrorShape(error)).toMatchObject({ code: '57014', message: 'canceling statement due to statement timeout' })
    await expectPoolIdle(h)
    const { rows: after } = await sql<{ ok: number }>`select 1 as ok`.execute(h.db)
    expect(after).toEqual([{ ok: 1 }])
    parity.record(dialect, 'stream.callerStatementTimeout', pgErrorShape(error))
  })

  it('streams inside a transaction and sees its uncommitted rows', async () => {
    const rows = await h.db.transaction().execute(async (trx) => {
      await trx.insertInto('num').values({ n: 11 }).execute()
      const seen: number[] = []
      for await (const row of trx.selectFrom('num').select('n').where('n', '>', 8).orderBy('n').stream(2)) seen.push(row.n)
      throw Object.assign(new Error('rollback'), { seen })
    }).catch((error: { seen?: number[] }) => error.seen)
    expect(rows).toEqual([9, 10, 11])
    expect(await h.db.selectFrom('num').select((eb) => eb.fn.countAll<string>().as('c')).executeTakeFirstOrThrow()).toEqual({ c: '10' })
    await expectPoolIdle(h)
  })

  it('throws the PostgresDialect error when no cursor is configured, and leaks nothing', async () => {
    const error = await rejectionOf(
      (async () => {
        for await (const row of noCursor.db.selectFrom('num').select('n').stream()) expect.fail(`got a row: ${JSON.stringify(row)}`)
      })(),
    )
    expect(error).toBeInstanceOf(Error)
    expect((error as Error).message).toBe(NO_CURSOR_MESSAGE)
    await expectPoolIdle(noCursor)
    const { rows } = await sql<{ ok: number }>`select 1 as ok`.execute(noCursor.db)
    expect(rows).toEqual([{ ok: 1 }])
    await expectPoolIdle(noCursor)
    parity.record(dialect, 'stream.noCursor', [(error as Error).name, (error as Error).message])
  })

  it('leaves its pools idle after every case', async () => {
    expect(h.pool.totalCount).toBe(1)
    await expectPoolIdle(h)
    await expectPoolIdle(noCursor)
  })
})

describe('parity', () => {
  it('both dialects recorded the same observations', () => {
    parity.expectParity()
  })
})
