import { Kysely, sql } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DeadlineExceededError, GovernedPostgresDialect, withQueryContext, type CancelEvent } from '../../src/index.js'
import { activeWithTag, pidOfRunning, rejectionOf, sleep, waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'
import { usePgBouncer } from './fixture.js'

// PgBouncer 1.18 in transaction pooling with 2 server connections under our pool of 4:
// the third and fourth statements wait in PgBouncer's queue, where it drops cancels.
const database = useTestDatabase()
const bouncer = usePgBouncer(() => database.url, { poolMode: 'transaction', defaultPoolSize: 2 })

describe.skipIf(!bouncer)('behind PgBouncer in transaction pooling: statements queued in PgBouncer at their deadline', () => {
  let db: Kysely<any>
  let pool: pg.Pool
  const cancels: CancelEvent[] = []

  beforeAll(async () => {
    await database.admin('create table queued_marker (n int)')
    pool = new pg.Pool({ connectionString: bouncer!.url, max: 4, application_name: 'pgbouncer-queued-test' })
    const dialect = new GovernedPostgresDialect({ pool, pooler: 'pgbouncer-transaction', admission: { feasibility: false } })
    dialect.events.on('cancel', (event) => cancels.push(event))
    db = new Kysely<any>({ dialect })
  })

  afterAll(async () => {
    await db?.destroy()
  })

  it('never run: our connection is closed at the deadline, and PgBouncer drops the statement it still queues', async () => {
    const before = cancels.length
    const holders = new pg.Pool({ connectionString: bouncer!.url, max: 2 })
    try {
      // Another client holds both server connections well past our deadline...
      const tag = 'pgb_queued_hold'
      const holding = Promise.all([0, 1].map(() => holders.query(`select pg_sleep(1.5) /* ${tag} */`)))
      await waitFor('both server connections held', async () => (await activeWithTag(database, tag)).length === 2)
      // ...so our inserts wait in PgBouncer's queue through their deadline.
      const queued = [1, 2].map((n) => rejectionOf(withQueryContext({ timeoutMs: 400 }, () => sql.raw(`insert into queued_marker values (${n})`).execute(db))))
      for (const error of await Promise.all(queued)) expect(error).toBeInstanceOf(DeadlineExceededError)
      await holding
      await sleep(500)
      // Checked on a direct superuser connection: the inserts never ran (the old cancel was dropped for a queued
      // client, and each insert ran as soon as a server connection freed up).
      expect(await database.admin('select n from queued_marker')).toEqual([])
      expect(await activeWithTag(database, 'queued_marker')).toEqual([])
      await waitFor('the cancel events', async () => cancels.length >= before + 2)
      expect(cancels.slice(before).map((event) => [event.reason, event.outcome?.method, event.destroyed])).toEqual(Array(2).fill(['deadline', 'close', true]))
      expect(await bouncer!.instance.alive()).toBe(true)
      // The pool recovers: new connections replace the closed ones.
      const { rows } = await withQueryContext({ timeoutMs: 5_000 }, () => sql<{ n: number }>`select 7 as n`.execute(db))
      expect(rows).toEqual([{ n: 7 }])
    } finally {
      await holders.end()
    }
  })

  it('with deadlineOnServerClock, running and queued ones alike: none of ours runs 1 s after the deadline', async () => {
    // Without the option, a queued statement that gets a server connection just before our close (the running ones'
    // own timeouts free them at the deadline) runs on up to its whole budget: the README says so.
    const onServerClock = new Kysely<any>({
      dialect: new GovernedPostgresDialect({
        pool: new pg.Pool({ connectionString: bouncer!.url, max: 4 }),
        pooler: { mode: 'pgbouncer-transaction', deadlineOnServerClock: true },
        admission: { feasibility: false },
      }),
    })
    try {
      const tag = 'pgb_clock_sleep'
      const queuedTag = 'pgb_clock_after'
      // withQueryContext takes a wall-clock deadline; the waits below go by the monotonic clock.
      const deadline = performance.now() + 1_500
      const deadlineEpochMs = Date.now() + 1_500
      // Two statements take both server connections, two more wait in PgBouncer's queue.
      const run = (text: string): Promise<any> => rejectionOf(withQueryContext({ deadline: deadlineEpochMs }, () => sql.raw(text).execute(onServerClock)))
      const running = [0, 1].map(() => run(`select pg_sleep(5) /* ${tag} */`))
      await waitFor('both server connections busy', async () => (await activeWithTag(database, tag)).length === 2)
      const queued = [0, 1].map(() => run(`select pg_sleep(5) /* ${queuedTag} */`))
      for (const error of await Promise.all([...running, ...queued])) expect(error).toBeInstanceOf(DeadlineExceededError)
      // Checked on a direct superuser connection.
      await sleep(Math.max(0, deadline + 1_000 - performance.now()))
      expect(await activeWithTag(database, tag)).toEqual([])
      expect(await activeWithTag(database, queuedTag)).toEqual([])
    } finally {
      await onServerClock.destroy()
    }
  })

  it("one that leaves PgBouncer's queue just before its deadline is stopped just after it, though its statement_timeout counts from its start", async () => {
    const holders = new pg.Pool({ connectionString: bouncer!.url, max: 2 })
    try {
      // Another client holds both server connections until shortly before our deadline...
      const holdTag = 'pgb_race_hold'
      const holding = Promise.all([0, 1].map(() => holders.query(`select pg_sleep(0.8) /* ${holdTag} */`)))
      await waitFor('both server connections held', async () => (await activeWithTag(database, holdTag)).length === 2)
      // ...so ours (with a parameter: carried by the extended protocol) waits in PgBouncer's queue, starts about
      // 200 ms before its deadline, and carries a statement_timeout that runs for its whole budget from there.
      const tag = 'pgb_race_sleep'
      const deadline = performance.now() + 1_000
      const pending = rejectionOf(withQueryContext({ timeoutMs: 1_000 }, () => sql`select pg_sleep(${5}) as ${sql.raw(tag)}`.execute(db)))
      await holding
      await waitFor('ours running', async () => (await activeWithTag(database, tag)).length === 1)
      expect(await pending).toBeInstanceOf(DeadlineExceededError)
      // Our close at the deadline made PgBouncer close the server connection, and the close check let the backend see it
      // (without the check it ran on to its statement_timeout, about 800 ms after the deadline).
      await waitFor('the backend gone', async () => (await activeWithTag(database, tag)).length === 0, 5_000)
      const lateMs = performance.now() - deadline
      expect(lateMs, `the backend ran ${lateMs.toFixed(0)} ms past the deadline`).toBeLessThan(400)
    } finally {
      await holders.end()
    }
  })

  it('a carried statement gets its own result and its deadline as statement_timeout, and leaves nothing behind', async () => {
    const { rows } = await withQueryContext({ timeoutMs: 4_000 }, () => sql.raw<{ ms: number }>(`select setting::int as ms from pg_settings where name = 'statement_timeout'`).execute(db))
    const ms = rows[0]?.ms ?? 0
    expect(ms).toBeGreaterThan(0)
    expect(ms).toBeLessThanOrEqual(4_000)
    // Both server connections, held at once inside transactions by a plain client: the server's default on each.
    const clients = await Promise.all([0, 1].map(() => pool.connect()))
    try {
      await Promise.all(clients.map((client) => client.query('begin')))
      const seen = await Promise.all(clients.map(async (client) => (await client.query<{ t: string }>(`select current_setting('statement_timeout') as t`)).rows[0]?.t))
      expect(seen).toEqual(['0', '0'])
      await Promise.all(clients.map((client) => client.query('commit')))
    } finally {
      for (const client of clients) client.release()
    }
  })

  it('an abort still cancels (the carried timeout is the deadline, not the abort): the backend stops and the connection is kept', async () => {
    const before = cancels.length
    const tag = 'pgb_queued_abort'
    const controller = new AbortController()
    const pending = withQueryContext({ signal: controller.signal, timeoutMs: 30_000 }, () => sql.raw(`select pg_sleep(30) /* ${tag} */`).execute(db))
    await pidOfRunning(database, tag)
    controller.abort()
    await rejectionOf(pending)
    await waitFor('the backend to stop', async () => (await activeWithTag(database, tag)).length === 0)
    await waitFor('the cancel event', async () => cancels.length > before)
    expect(cancels[before]).toMatchObject({ reason: 'abort', outcome: { method: 'protocol' }, destroyed: false })
  })

  it("with deadlineOnServerClock, a statement that waited in PgBouncer's queue gets only what is left of its budget", async () => {
    const onServerClock = new Kysely<any>({
      dialect: new GovernedPostgresDialect({
        pool: new pg.Pool({ connectionString: bouncer!.url, max: 1 }),
        pooler: { mode: 'pgbouncer-transaction', deadlineOnServerClock: true },
        admission: { feasibility: false },
      }),
    })
    const holders = new pg.Pool({ connectionString: bouncer!.url, max: 2 })
    try {
      await withQueryContext({ timeoutMs: 5_000 }, () => sql`select 1`.execute(onServerClock))
      // A plain client holds both server connections for a second...
      const tag = 'pgb_server_clock_hold'
      const holding = Promise.all([0, 1].map(() => holders.query(`select pg_sleep(1) /* ${tag} */`)))
      await waitFor('both server connections held', async () => (await activeWithTag(database, tag)).length === 2)
      // ...so ours waits in PgBouncer's queue for most of it before it starts, and sees what is left.
      const { rows } = await withQueryContext({ timeoutMs: 3_000 }, () =>
        sql.raw<{ ms: number }>(`select setting::int as ms from pg_settings where name = 'statement_timeout'`).execute(onServerClock),
      )
      await holding
      const ms = rows[0]?.ms ?? 0
      expect(ms).toBeGreaterThan(0)
      // Sent with about 3000 ms left; the wait of up to a second came off (with the SET LOCAL as sent it would not).
      expect(ms).toBeLessThan(2_700)
    } finally {
      await onServerClock.destroy()
      await holders.end()
    }
  })
})
