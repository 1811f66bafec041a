import { Kysely, sql } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  DeadlineExceededError,
  GovernedPostgresDialect,
  InvalidOptionError,
  QueryCanceledError,
  withQueryContext,
  type CancelEvent,
} from '../../src/index.js'
import { seededRandom } from '../support/seeded-random.js'
import { expectBackendIdle, pidOfRunning, rejectionOf, sleep, waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'
import { usePgBouncer } from './fixture.js'

// PgBouncer 1.18 (Debian's) in transaction pooling with 4 server connections, shared by
// our pool and a second application's plain pg.Pool, as production runs it.
const database = useTestDatabase()
const bouncer = usePgBouncer(() => database.url, { poolMode: 'transaction', defaultPoolSize: 4 })

describe.skipIf(!bouncer)('behind PgBouncer in transaction pooling', () => {
  let db: Kysely<any>
  let dialect: GovernedPostgresDialect
  let pool: pg.Pool
  let bystanders: pg.Pool
  const cancels: CancelEvent[] = []

  beforeAll(() => {
    const url = bouncer!.url
    pool = new pg.Pool({ connectionString: url, max: 4, application_name: 'pgbouncer-transaction-test' })
    dialect = new GovernedPostgresDialect({ pool, pooler: 'pgbouncer-transaction', admission: { feasibility: false } })
    dialect.events.on('cancel', (event) => cancels.push(event))
    db = new Kysely<any>({ dialect })
    bystanders = new pg.Pool({ connectionString: url, max: 4, application_name: 'bystander' })
    bystanders.on('error', () => {})
  })

  afterAll(async () => {
    await db?.destroy()
    await bystanders?.end()
  })

  it('stops the backend at the deadline, through PgBouncer: a statement with parameters carries its deadline, and its connection is closed at it', async () => {
    const before = cancels.length
    const tag = 'pgb_deadline'
    // Sent by the extended protocol with `set local statement_timeout` and the close check in front (src/session/carried-query.ts).
    const pending = withQueryContext({ timeoutMs: 300 }, () => sql`select pg_sleep(${30}) as ${sql.raw(tag)}`.execute(db))
    // Checked on a direct superuser connection: PgBouncer's pids are not backends'.
    const pid = await pidOfRunning(database, tag)
    expect(await rejectionOf(pending)).toBeInstanceOf(DeadlineExceededError)
    await expectBackendIdle(database, pid)
    await waitFor('the cancel event', async () => cancels.length > before)
    const event = cancels[before] as CancelEvent
    // What really happened: no CancelRequest; the connection closed, so it is not reused.
    expect(event.outcome).toMatchObject({ method: 'close', confirmed: false })
    expect(event.destroyed).toBe(true)
    expect(await bouncer!.instance.alive()).toBe(true)
  })

  it('stops the backend at the deadline inside a transaction by a protocol CancelRequest (SET LOCAL is the backstop there)', async () => {
    const before = cancels.length
    const tag = 'pgb_deadline_in_transaction'
    const pending = withQueryContext({ timeoutMs: 300 }, () => db.transaction().execute((trx) => sql`select pg_sleep(${30}) as ${sql.raw(tag)}`.execute(trx)))
    const pid = await pidOfRunning(database, tag)
    expect(await rejectionOf(pending)).toBeInstanceOf(DeadlineExceededError)
    await expectBackendIdle(database, pid)
    await waitFor('the cancel event', async () => cancels.length > before)
    const event = cancels[before] as CancelEvent
    // A protocol cancel, not confirmed by the server, and the connection kept because the statement ended with 57014.
    expect(event.outcome).toMatchObject({ method: 'protocol', confirmed: false })
    expect(event.destroyed).toBe(false)
    expect(await bouncer!.instance.alive()).toBe(true)
  })

  it('stops the backend on abort', async () => {
    const tag = 'pgb_abort'
    const controller = new AbortController()
    const pending = withQueryContext({ signal: controller.signal, timeoutMs: 30_000 }, () => sql`select pg_sleep(30) as ${sql.raw(tag)}`.execute(db))
    const pid = await pidOfRunning(database, tag)
    controller.abort()
    expect(await rejectionOf(pending)).toBeInstanceOf(QueryCanceledError)
    await expectBackendIdle(database, pid)
  })

  it('carries statement_timeout inside a transaction as SET LOCAL, and sets nothing outside one', async () => {
    const inside = await withQueryContext({ timeoutMs: 5_000 }, () =>
      db.transaction().execute(async (trx) => (await sql<{ statement_timeout: string }>`show statement_timeout`.execute(trx)).rows[0]?.statement_timeout),
    )
    expect(inside).not.toBe('0')
    const outside = await withQueryContext({ timeoutMs: 5_000 }, async () => (await sql<{ statement_timeout: string }>`show statement_timeout`.execute(db)).rows[0]?.statement_timeout)
    expect(outside).toBe('0')
  })

  it("does not read back a caller's own SET of statement_timeout outside a transaction (the read-back could run on another server connection); inside one it does", async () => {
    const sent: string[] = []
    const spied = new pg.Pool({ connectionString: bouncer!.url, max: 1 })
    // Records what the session sends; pg itself runs as usual.
    spied.on('connect', (client) => {
      const query = client.query.bind(client) as (...args: unknown[]) => unknown
      ;(client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args) => {
        if (typeof args[0] === 'string') sent.push(args[0])
        return query(...args)
      }
    })
    const spiedDb = new Kysely<any>({ dialect: new GovernedPostgresDialect({ pool: spied, pooler: 'pgbouncer-transaction' }) })
    const readBacks = (): number => sent.filter((text) => text.includes('pg_settings')).length
    try {
      // `to default`: a caller's SET as any other, which leaves nothing on the server connection for the other tests.
      await withQueryContext({ timeoutMs: 5_000 }, () => sql`set statement_timeout to default`.execute(spiedDb))
      expect(sent.some((text) => /^set statement_timeout to default/.test(text))).toBe(true)
      expect(readBacks()).toBe(0)
      // Inside a transaction the server connection is ours until it ends: the read-back is sound there.
      await withQueryContext({ timeoutMs: 5_000 }, () => spiedDb.transaction().execute((trx) => sql`set local statement_timeout = '1s'`.execute(trx)))
      expect(readBacks()).toBe(1)
    } finally {
      await spiedDb.destroy()
    }
  })

  it('leaves no statement_timeout of ours on any server connection: another client sees the default and its long statement runs', async () => {
    // Our workload: deadlines of several ladder steps, outside and inside transactions.
    for (let i = 0; i < 40; i++) {
      const timeoutMs = [200, 700, 2_500, 9_000][i % 4] as number
      await withQueryContext({ timeoutMs }, () =>
        i % 2 === 0 ? sql`select ${i}::int as n`.execute(db) : db.transaction().execute((trx) => sql`select ${i}::int as n`.execute(trx)),
      )
    }
    // Four bystander clients at once hold the four server connections, each inside a transaction so that it keeps its own.
    const clients = await Promise.all([0, 1, 2, 3].map(() => bystanders.connect()))
    try {
      await Promise.all(clients.map((client) => client.query('begin')))
      const seen = await Promise.all(
        clients.map(async (client) => (await client.query<{ pid: number; timeout: string }>('select pg_backend_pid() as pid, current_setting($1) as timeout', ['statement_timeout'])).rows[0]),
      )
      expect(new Set(seen.map((row) => row?.pid)).size).toBe(4)
      expect(seen.map((row) => row?.timeout)).toEqual(['0', '0', '0', '0'])
      await Promise.all(clients.map((client) => client.query('commit')))
      // A statement longer than any step we used, with no timeout of its own, on every server connection.
      const started = performance.now()
      await Promise.all(clients.map((client) => client.query('select pg_sleep(1.5)')))
      console.log(`[pgbouncer] bystanders' pg_sleep(1.5) x4 ran in ${Math.round(performance.now() - started)} ms, none killed`)
    } finally {
      for (const client of clients) client.release()
    }
  })

  it('survives a cancel storm beside another client: no wrong cancel, no wrong result, PgBouncer alive', async () => {
    const random = seededRandom(21)
    const before = cancels.length
    let stop = false
    const bystanderStats = { statements: 0, wrong: 0, errors: [] as string[] }
    // The other application: short statements, never aborted, each checking its own answer.
    const bystander = async (worker: number): Promise<void> => {
      for (let i = 0; !stop && i < 5_000; i++) {
        const n = worker * 100_000 + i
        try {
          const { rows } = await bystanders.query<{ n: number }>('select $1::int as n from pg_sleep(0.005)', [n])
          if (rows[0]?.n !== n) bystanderStats.wrong++
        } catch (error) {
          bystanderStats.errors.push(String(error))
        }
        bystanderStats.statements++
      }
    }
    const ours = { aborted: 0, rejectedRight: 0, answered: 0, wrong: 0 }
    // Ours: few in flight, so aborts land on running statements; each long enough never to end by itself near its cancel.
    const worker = async (): Promise<void> => {
      for (let i = 0; i < 100; i++) {
        if (random() < 0.8) {
          const controller = new AbortController()
          const pending = withQueryContext({ signal: controller.signal, timeoutMs: 20_000 }, () => sql`select pg_sleep(3)`.execute(db))
          await sleep(5 + Math.floor(random() * 40))
          controller.abort()
          ours.aborted++
          if ((await rejectionOf(pending)) instanceof QueryCanceledError) ours.rejectedRight++
        } else {
          const n = Math.floor(random() * 1e6)
          const { rows } = await withQueryContext({ timeoutMs: 10_000 }, () => sql<{ n: number }>`select ${n}::int as n`.execute(db))
          if (rows[0]?.n === n) ours.answered++
          else ours.wrong++
        }
      }
    }
    const bystanding = Promise.all([1, 2].map(bystander))
    const started = performance.now()
    await Promise.all([worker(), worker(), worker()])
    stop = true
    await bystanding
    const events = cancels.slice(before)
    await waitFor('the pool to come to rest', async () => dialect.poolStats().permits === 0 && dialect.poolStats().used === 0)
    const landed = events.filter((event) => event.outcome?.method === 'protocol' && !event.destroyed).length
    console.log(
      `[pgbouncer] storm: ${ours.aborted} aborts (${events.length} cancel events, ${landed} ended their statement with 57014, ` +
        `${events.length - landed} destroyed), ${ours.answered} answers; bystander ${bystanderStats.statements} statements, ` +
        `${bystanderStats.errors.length} errors, ${bystanderStats.wrong} wrong; ${Math.round(performance.now() - started)} ms`,
    )
    expect(bystanderStats.errors).toEqual([])
    expect(bystanderStats.wrong).toBe(0)
    expect(ours.wrong).toBe(0)
    expect(ours.rejectedRight).toBe(ours.aborted)
    expect(ours.aborted).toBeGreaterThan(200)
    expect(events.every((event) => event.outcome?.method === 'protocol')).toBe(true)
    // Most aborts land on a running statement and end it (the rest are aborted before the statement reached a server).
    expect(landed).toBeGreaterThan(ours.aborted / 2)
    expect(await bouncer!.instance.alive()).toBe(true)
    // Nothing of ours still runs.
    const running = await database.admin<{ count: string }>(`select count(*) from pg_stat_activity where query like 'select pg_sleep(3)%' and state = 'active'`)
    expect(Number(running[0]?.count)).toBe(0)
  })

  it('explains a startup parameter PgBouncer refuses, and what to change', async () => {
    const refusing = new pg.Pool({ connectionString: `${bouncer!.url}?statement_timeout=1000` })
    try {
      // At construction, for a pool given as an object.
      expect(() => new GovernedPostgresDialect({ pool: refusing, pooler: 'pgbouncer-transaction' })).toThrow(InvalidOptionError)
      // At the first query, for a pool made by a function.
      const lazy = new Kysely<any>({ dialect: new GovernedPostgresDialect({ pool: async () => refusing, pooler: 'pgbouncer-transaction' }) })
      const error = await rejectionOf(sql`select 1`.execute(lazy))
      expect(error).toBeInstanceOf(InvalidOptionError)
      expect(error.message).toMatch(/statement_timeout/)
      expect(error.message).toMatch(/08P01 unsupported startup parameter/)
      expect(error.message).toMatch(/ignore_startup_parameters/)
      await lazy.destroy()
      // What PgBouncer itself answers to the same pool.
      const raw = await rejectionOf(refusing.query('select 1'))
      expect(raw.code).toBe('08P01')
      expect(raw.message).toMatch(/unsupported startup parameter/)
    } finally {
      await refusing.end().catch(() => {})
    }
  })
})
