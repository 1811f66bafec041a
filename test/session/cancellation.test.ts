import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import Cursor from 'pg-cursor'
import { sql } from 'kysely'
import { afterAll, describe, expect, it } from 'vitest'
import { DeadlineExceededError, QueryCanceledError, withQueryContext, type CancelEvent, type QueryEvent } from '../../src/index.js'
import { activeWithTag, backend, expectBackendIdle, governed, pidOfRunning, rejectionOf, waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()
// Feasibility shedding would refuse the short-deadline waiters these tests queue on purpose.
const { db, dialect, pool } = governed(database, { max: 3, application_name: 'cancellation-test' }, { cursor: Cursor, admission: { feasibility: false } })
const cancels: CancelEvent[] = []
dialect.events.on('cancel', (event) => cancels.push(event))

afterAll(() => db.destroy())

const pgModule = createRequire(import.meta.url).resolve('pg')

/**
 * Holds this thread (no timer runs, no socket is read) until backend `pid`
 * has stopped running its statement, as another process sees it in
 * pg_stat_activity. The server flushes its error before it reports the
 * backend idle, so the error is in our socket when this returns.
 */
function holdThreadUntilBackendIdle(pid: number): void {
  const watcher = `
    const pg = require(process.env.PG_MODULE)
    const client = new pg.Client({ connectionString: process.env.DATABASE_URL })
    async function watch() {
      await client.connect()
      for (;;) {
        const { rows } = await client.query('select state from pg_stat_activity where pid = $1', [Number(process.env.BACKEND_PID)])
        if (rows[0]?.state !== 'active') break
        await new Promise((resolve) => setTimeout(resolve, 5))
      }
      await client.end()
    }
    watch().then(() => process.exit(0), (error) => { console.error(error); process.exit(1) })`
  const result = spawnSync(process.execPath, ['-e', watcher], {
    env: { ...process.env, PG_MODULE: pgModule, DATABASE_URL: database.url, BACKEND_PID: String(pid) },
    encoding: 'utf8',
    timeout: 30_000,
  })
  if (result.status !== 0) throw new Error(`watching backend ${pid} failed: ${result.error?.message ?? result.stderr}`)
}

async function expectPoolAtRest(): Promise<void> {
  await waitFor('the pool to return to rest', async () => {
    const stats = dialect.poolStats()
    return stats.permits === 0 && stats.waiting === 0 && stats.used === 0 && stats.pgPoolWaiting === 0
  })
}

describe('invariant 1: a query whose deadline passes', () => {
  it('is rejected at the deadline and its backend stops', async () => {
    const tag = 'inv1_deadline'
    const started = performance.now()
    const pending = withQueryContext({ timeoutMs: 300 }, () => sql`select pg_sleep(30) as ${sql.raw(tag)}`.execute(db))
    const pid = await pidOfRunning(database, tag)
    const error = await rejectionOf(pending)
    const elapsed = performance.now() - started
    expect(error).toBeInstanceOf(DeadlineExceededError)
    expect(error.code).toBe('DEADLINE_EXCEEDED')
    expect(error.phase).toBe('running')
    expect(error.budgetMs).toBeGreaterThan(0)
    expect(error.budgetMs).toBeLessThanOrEqual(300)
    expect(elapsed).toBeGreaterThanOrEqual(299)
    // Not a timing claim: the statement sleeps 30 s, so anything near the budget proves the deadline fired.
    expect(elapsed).toBeLessThan(5_000)
    await expectBackendIdle(database, pid)
    await expectPoolAtRest()
  })

  it('is refused before it is sent when the budget is already spent', async () => {
    const tag = 'inv1_spent'
    const error = await rejectionOf(withQueryContext({ timeoutMs: 0 }, () => sql`select 1 as ${sql.raw(tag)}`.execute(db)))
    expect(error).toBeInstanceOf(DeadlineExceededError)
    expect(error.phase).toBe('before_start')
    const seen = await database.admin(`select 1 from pg_stat_activity where position($1 in query) > 0 and pid <> pg_backend_pid()`, [tag])
    expect(seen).toHaveLength(0)
    await expectPoolAtRest()
  })

  it('carries the server error as cause when statement_timeout fires first', async () => {
    const tag = 'inv1_server_first'
    const before = cancels.length
    // 2 s is a ladder step: the server gets statement_timeout = 2 s and stops the statement just after the deadline.
    // The policy sets the deadline; the nested context cannot extend it (else the server would allow 60 s).
    const started = performance.now()
    const pending = withQueryContext({ timeoutMs: 2_000 }, () =>
      withQueryContext({ timeoutMs: 60_000 }, () => sql`select pg_sleep(30) as ${sql.raw(tag)}`.execute(db)),
    )
    const pid = await pidOfRunning(database, tag)
    // From a timer callback well before the deadline, hold the thread until the server has stopped the statement.
    // Node runs only the timers that were due when its timer phase began, then reads sockets: the server's error
    // is read before our deadline timer can run.
    const heldAt = await new Promise<number>((resolve, reject) =>
      setTimeout(() => {
        const at = performance.now()
        try {
          holdThreadUntilBackendIdle(pid)
          resolve(at)
        } catch (error) {
          reject(error)
        }
      }, 0),
    )
    // The precondition of the race: the thread was held while the deadline was still ahead.
    expect(heldAt - started).toBeLessThan(1_500)
    const error = await rejectionOf(pending)
    expect(error).toBeInstanceOf(DeadlineExceededError)
    expect(error.phase).toBe('running')
    expect(error.cause).toMatchObject({ code: '57014', message: 'canceling statement due to statement timeout' })
    // The server stopped the statement itself: we sent no cancel.
    expect(cancels.slice(before)).toEqual([])
    await expectBackendIdle(database, pid)
    await expectPoolAtRest()
  })
})

describe('abort at each stage', () => {
  it('before acquire: nothing is sent', async () => {
    const controller = new AbortController()
    controller.abort(new Error('gone before we started'))
    const tag = 'stage_before_acquire'
    const error = await rejectionOf(withQueryContext({ signal: controller.signal }, () => sql`select 1 as ${sql.raw(tag)}`.execute(db)))
    expect(error).toBeInstanceOf(QueryCanceledError)
    expect(error.phase).toBe('before_start')
    expect(error.reason.message).toBe('gone before we started')
    // No backend ever saw the statement: an idle backend would still show it as its last query.
    const seen = await database.admin(`select 1 from pg_stat_activity where position($1 in query) > 0 and pid <> pg_backend_pid()`, [tag])
    expect(seen).toHaveLength(0)
    await expectPoolAtRest()
  })

  it('while waiting: the waiter leaves the queue at once (invariant 7)', async () => {
    const holders = [1, 2, 3].map(() => withQueryContext({ timeoutMs: 2_000 }, () => sql`select pg_sleep(0.6)`.execute(db)))
    await waitFor('the pool to be full', async () => dialect.poolStats().used === 3)
    const controller = new AbortController()
    const waiter = withQueryContext({ signal: controller.signal }, () => sql`select 1`.execute(db))
    await waitFor('the waiter to queue', async () => dialect.poolStats().waiting === 1)
    controller.abort('client disconnected')
    const error = await rejectionOf(waiter)
    expect(error).toBeInstanceOf(QueryCanceledError)
    expect(error.phase).toBe('waiting')
    expect(error.reason).toBe('client disconnected')
    // Synchronously after the rejection, while all three connections are still busy.
    expect(dialect.poolStats().waiting).toBe(0)
    expect(dialect.poolStats().permits).toBe(3)
    expect(pool.waitingCount).toBe(0)
    await Promise.all(holders)
    await expectPoolAtRest()
  })

  it('while waiting: an expired waiter leaves at its deadline', async () => {
    const holders = [1, 2, 3].map(() => sql`select pg_sleep(0.5)`.execute(db))
    await waitFor('the pool to be full', async () => dialect.poolStats().used === 3)
    const startedAt = performance.now()
    const error = await rejectionOf(withQueryContext({ timeoutMs: 100 }, () => sql`select 1`.execute(db)))
    // Not before the deadline. (waitedMs counts from the enqueue, which a loaded machine reaches some ms into the budget.)
    expect(performance.now() - startedAt).toBeGreaterThanOrEqual(99)
    expect(error).toBeInstanceOf(DeadlineExceededError)
    expect(error.phase).toBe('waiting')
    expect(error.waitedMs).toBeGreaterThan(0)
    expect(dialect.poolStats().waiting).toBe(0)
    await Promise.all(holders)
    await expectPoolAtRest()
  })

  it('while running: the backend is cancelled with a confirmed pg_cancel_backend', async () => {
    const tag = 'stage_running'
    const controller = new AbortController()
    const pending = withQueryContext({ signal: controller.signal }, () => sql`select pg_sleep(30) as ${sql.raw(tag)}`.execute(db))
    const pid = await pidOfRunning(database, tag)
    cancels.length = 0
    controller.abort(new Error('user navigated away'))
    const error = await rejectionOf(pending)
    expect(error).toBeInstanceOf(QueryCanceledError)
    expect(error.phase).toBe('running')
    await expectBackendIdle(database, pid)
    await waitFor('the cancel event', async () => cancels.length === 1)
    expect(cancels[0]).toMatchObject({ pid, reason: 'abort', destroyed: false, outcome: { method: 'backend', confirmed: true } })
    await expectPoolAtRest()
    // The connection was reused clean: the same backend (the last released, taken first) answers a plain query.
    const { rows } = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(db)
    expect(rows[0]?.pid).toBe(pid)
  })

  it('inside a transaction: the statement is cancelled and the transaction rolls back', async () => {
    await sql`create table if not exists tx_abort (id int)`.execute(db)
    const tag = 'stage_transaction'
    const controller = new AbortController()
    const pending = withQueryContext({ signal: controller.signal }, () =>
      db.transaction().execute(async (trx) => {
        await sql`insert into tx_abort values (1)`.execute(trx)
        await sql`select pg_sleep(30) as ${sql.raw(tag)}`.execute(trx)
      }),
    )
    const pid = await pidOfRunning(database, tag)
    controller.abort()
    const error = await rejectionOf(pending)
    expect(error).toBeInstanceOf(QueryCanceledError)
    await expectBackendIdle(database, pid)
    await expectPoolAtRest()
    const rows = await database.admin('select * from tx_abort')
    expect(rows).toEqual([])
    const open = await database.admin(`select 1 from pg_stat_activity where state like 'idle in transaction%' and application_name = 'cancellation-test'`)
    expect(open).toEqual([])
  })

  it('while streaming: cancelled on the server, cursor closed, connection returned', async () => {
    const tag = 'stage_stream'
    const controller = new AbortController()
    const streamed = withQueryContext({ signal: controller.signal }, async () => {
      const rows: number[] = []
      for await (const row of db
        .selectFrom(sql<{ n: number; s: unknown }>`(select n, pg_sleep(case when n > 2 then 30 else 0 end) as ${sql.raw(tag)} from generate_series(1, 5) as n)`.as('t'))
        .select('n')
        .stream(1)) {
        rows.push(row.n)
      }
      return rows
    })
    const pid = await pidOfRunning(database, tag)
    const before = cancels.length
    controller.abort(new Error('stop streaming'))
    const error = await rejectionOf(streamed)
    expect(error).toBeInstanceOf(QueryCanceledError)
    await expectBackendIdle(database, pid)
    await waitFor('the cancel event', async () => cancels.length > before)
    expect(cancels.slice(before)).toMatchObject([{ pid, reason: 'abort', outcome: { method: 'backend', confirmed: true } }])
    await expectPoolAtRest()
  })
})

describe('a statement that outlives its first cancel', () => {
  it('is cancelled again until it stops, and its connection is reused, not destroyed', async () => {
    // Stands in for a cancel that reached the backend before the statement did (the server drops it): the first cancel is swallowed.
    await database.admin(`
      create or replace function outlive_first_cancel() returns int language plpgsql as $$
      begin
        begin
          perform pg_sleep(30);
        exception when query_canceled then
          perform pg_sleep(30);
        end;
        return 1;
      end $$`)
    const tag = 'outlive_first_cancel'
    const controller = new AbortController()
    const before = cancels.length
    const pending = withQueryContext({ signal: controller.signal }, () => sql`select outlive_first_cancel() as ${sql.raw(tag)}`.execute(db))
    const pid = await pidOfRunning(database, tag)
    controller.abort(new Error('caller left'))
    expect(await rejectionOf(pending)).toBeInstanceOf(QueryCanceledError)
    await expectBackendIdle(database, pid)
    await expectPoolAtRest()
    expect(cancels.slice(before)).toMatchObject([{ pid, reason: 'abort', destroyed: false, outcome: { confirmed: true } }])
    // The same backend serves the next query: the connection was returned clean.
    const { rows } = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(db)
    expect(rows[0]?.pid).toBe(pid)
  })
})

describe('streaming, stopped between fetches', () => {
  it('sends no further fetch, closes the cursor and frees the connection', async () => {
    const tag = 'stage_stream_between'
    const controller = new AbortController()
    const before = cancels.length
    const seen: number[] = []
    const streamed = withQueryContext({ signal: controller.signal }, async () => {
      for await (const row of db
        .selectFrom(sql<{ n: number }>`(select n, pg_sleep(case when n > 2 then 30 else 0 end) as ${sql.raw(tag)} from generate_series(1, 5) as n)`.as('t'))
        .select('n')
        .stream(1)) {
        seen.push(row.n)
        // The consumer gives up while it holds row 2: the backend's portal is suspended, nothing runs.
        if (row.n === 2) controller.abort(new Error('enough rows'))
      }
    })
    const error = await rejectionOf(streamed)
    expect(error).toBeInstanceOf(QueryCanceledError)
    expect(seen).toEqual([1, 2])
    await expectPoolAtRest()
    // Row 3 (a 30 s sleep) was never fetched: no backend is running it, and none had to be cancelled.
    expect(await activeWithTag(database, tag)).toEqual([])
    expect(cancels.slice(before)).toEqual([])
  })
})

describe('streams in the query events', () => {
  it('report one event per stream, with its outcome', async () => {
    const events: QueryEvent[] = []
    const off = dialect.events.on('query', (event) => {
      if (event.sql?.includes('stream_events')) events.push(event)
    })
    const stream = (signal?: AbortSignal) =>
      withQueryContext({ signal }, async () => {
        for await (const row of db
          .selectFrom(sql<{ n: number }>`(select n as stream_events from generate_series(1, 3) as n)`.as('t'))
          .select('stream_events')
          .stream(1)) {
          expect(row.stream_events).toBeGreaterThan(0)
        }
      })
    await stream()
    off()
    const controller = new AbortController()
    controller.abort()
    expect(events.map((event) => [event.outcome, event.phase])).toEqual([['ok', 'running']])
    // The aborted one is refused before anything is sent: one event, without SQL (nothing ran).
    const refused: QueryEvent[] = []
    const off2 = dialect.events.on('query', (event) => refused.push(event))
    await rejectionOf(stream(controller.signal))
    off2()
    expect(refused.map((event) => [event.outcome, event.phase])).toEqual([['canceled', 'before_start']])
  })
})

describe("Kysely's own execute({ signal, inflightQueryAbortStrategy })", () => {
  it("'cancel query' cancels the backend through our control connection", async () => {
    const tag = 'kysely_cancel'
    const controller = new AbortController()
    cancels.length = 0
    const pending = sql`select pg_sleep(30) as ${sql.raw(tag)}`.execute(db, { signal: controller.signal, inflightQueryAbortStrategy: 'cancel query' })
    const pid = await pidOfRunning(database, tag)
    controller.abort(new Error('kysely abort'))
    const error = await rejectionOf(pending)
    expect(error.message).toBe('kysely abort')
    await expectBackendIdle(database, pid)
    await waitFor('the cancel event', async () => cancels.length === 1)
    expect(cancels[0]).toMatchObject({ pid, reason: 'kysely', outcome: { method: 'backend', confirmed: true }, destroyed: false })
    await expectPoolAtRest()
  })

  it("'kill session' terminates the backend and the pool recovers", async () => {
    const tag = 'kysely_kill'
    const controller = new AbortController()
    const pending = sql`select pg_sleep(30) as ${sql.raw(tag)}`.execute(db, { signal: controller.signal, inflightQueryAbortStrategy: 'kill session' })
    const pid = await pidOfRunning(database, tag)
    controller.abort()
    await rejectionOf(pending)
    await waitFor(`backend ${pid} to be gone`, async () => !(await backend(database, pid)))
    await expectPoolAtRest()
    const { rows } = await sql<{ one: number }>`select 1 as one`.execute(db)
    expect(rows).toEqual([{ one: 1 }])
  })
})
