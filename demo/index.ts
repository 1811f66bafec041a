/**
 * `npm run demo`: a tour of pg-governor against a real PostgreSQL.
 *
 * Starts a server the way the tests do (PG_TEST_URL, else testcontainers when a
 * Docker engine answers, else an embedded PostgreSQL 18), loads
 * sql/demo-schema.sql into a fresh database, runs a few ordinary queries
 * through GovernedPostgresDialect, then shows governance at work:
 *
 *   1. a 200 ms deadline against `pg_sleep(2)` -> DeadlineExceededError, and the
 *      backend is idle again (pg_stat_activity);
 *   2. an AbortController aborted mid-query -> QueryCanceledError;
 *   3. a wait for a connection bounded by the deadline -> DeadlineExceededError
 *      in phase 'waiting'.
 *
 * Everything is torn down at the end; the process exits by itself.
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Kysely, sql, type Generated } from 'kysely'
import pg from 'pg'
import Cursor from 'pg-cursor'
import {
  DeadlineExceededError,
  GovernedPostgresDialect,
  GovernorError,
  QueryCanceledError,
  withQueryContext,
  type CancelEvent,
  type GovernorEvents,
} from '../src/index.js'
import { startTestServer, type TestServer } from '../test/support/test-server.js'

interface Database {
  customers: { id: Generated<string>; email: string; name: string; tier: Generated<string>; created_at: Generated<Date> }
  orders: { id: Generated<string>; customer_id: string; status: Generated<string>; total_cents: number; placed_at: Generated<Date> }
  order_lines: { order_id: string; line_no: number; sku: string; quantity: number; price_cents: number }
  daily_sales: { day: Date; orders: number; revenue_cents: string; refreshed_at: Generated<Date> }
}

interface Scenario {
  readonly name: string
  readonly expected: string
  got: string
  elapsedMs: number
  ok: boolean
}

/** If anything hangs, fail loudly instead of sitting there. */
const WATCHDOG_MS = 90_000
const watchdog = setTimeout(() => {
  console.error(`\ndemo: still running after ${WATCHDOG_MS / 1000} s; giving up`)
  process.exit(2)
}, WATCHDOG_MS)
watchdog.unref()

const schemaFile = fileURLToPath(new URL('../sql/demo-schema.sql', import.meta.url))
const scenarios: Scenario[] = []
const t0 = performance.now()

function heading(text: string): void {
  console.log(`\n── ${text} ${'─'.repeat(Math.max(0, 72 - text.length))}`)
}

function ms(value: number): string {
  return `${value.toFixed(1)} ms`
}

function euros(cents: number | string): string {
  return `€${(Number(cents) / 100).toFixed(2)}`
}

/** The next `cancel` event of the dialect: it fires once the query and the cancel have both settled. */
function nextCancel(events: GovernorEvents): Promise<CancelEvent> {
  return new Promise((resolve) => {
    const off = events.on('cancel', (event) => {
      off()
      resolve(event)
    })
  })
}

async function main(): Promise<void> {
  heading('Starting PostgreSQL')
  let started = performance.now()
  const server: TestServer = await startTestServer()
  const databaseName = `pg_governor_demo_${randomBytes(4).toString('hex')}`
  const admin = new pg.Client({ connectionString: server.url, application_name: 'pg-governor demo admin' })
  let db: Kysely<Database> | undefined
  let databaseCreated = false
  try {
    await admin.connect()
    const version = (await admin.query<{ server_version: string }>('show server_version')).rows[0]?.server_version
    console.log(`PostgreSQL ${version} from ${server.source}, ready in ${ms(performance.now() - started)}`)

    await admin.query(`create database ${databaseName}`)
    databaseCreated = true
    const url = new URL(server.url)
    url.pathname = `/${databaseName}`

    heading('Loading sql/demo-schema.sql')
    started = performance.now()
    const loader = new pg.Client({ connectionString: url.toString() })
    await loader.connect()
    await loader.query(readFileSync(schemaFile, 'utf8'))
    await loader.end()
    console.log(`database ${databaseName}: customers, orders, order_lines, daily_sales (${ms(performance.now() - started)})`)

    // The only change from Kysely's PostgresDialect: the class name (and the governance options).
    const dialect = new GovernedPostgresDialect({
      pool: new pg.Pool({ connectionString: url.toString(), max: 4, application_name: 'pg-governor demo' }),
      cursor: Cursor,
      defaultTimeoutMs: 5_000,
    })
    const statementTimeouts: string[] = []
    dialect.events.on('statementTimeout', (event) => statementTimeouts.push(`pid ${event.pid}: ${event.valueMs}${event.local ? ' (local)' : ''}`))
    db = new Kysely<Database>({ dialect })

    heading('Ordinary queries through GovernedPostgresDialect')
    const top = await db
      .selectFrom('orders')
      .innerJoin('customers', 'customers.id', 'orders.customer_id')
      .select(['customers.name', 'customers.tier'])
      .select((eb) => [eb.fn.sum<string>('orders.total_cents').as('revenue'), eb.fn.countAll<string>().as('orders')])
      .where('orders.status', '<>', 'cancelled')
      .groupBy(['customers.name', 'customers.tier'])
      .orderBy('revenue', 'desc')
      .limit(3)
      .execute()
    console.log('Top customers by revenue:')
    for (const row of top) console.log(`  ${row.name.padEnd(12)} ${row.tier.padEnd(9)} ${row.orders.padStart(3)} orders  ${euros(row.revenue)}`)

    const byStatus = await withQueryContext({ timeoutMs: 800, criticality: 'critical', domain: 'checkout' }, () =>
      db!.selectFrom('orders').select(['status', (eb) => eb.fn.countAll<string>().as('n')]).groupBy('status').orderBy('status').execute(),
    )
    console.log(`Orders by status (inside withQueryContext, 800 ms budget): ${byStatus.map((r) => `${r.status}=${r.n}`).join(', ')}`)

    let streamed = 0
    let best = { day: '', revenue: 0 }
    for await (const row of db.selectFrom('daily_sales').select(['day', 'revenue_cents']).orderBy('day').stream(16)) {
      streamed++
      if (Number(row.revenue_cents) > best.revenue) best = { day: row.day.toISOString().slice(0, 10), revenue: Number(row.revenue_cents) }
    }
    console.log(`Streamed ${streamed} daily_sales rows with pg-cursor; best day ${best.day} (${euros(best.revenue)})`)

    const orderId = await db.transaction().execute(async (trx) => {
      const customer = await trx.selectFrom('customers').select('id').where('email', '=', 'customer7@example.com').executeTakeFirstOrThrow()
      const order = await trx
        .insertInto('orders')
        .values({ customer_id: customer.id, total_cents: 4_990 })
        .returning('id')
        .executeTakeFirstOrThrow()
      await trx.insertInto('order_lines').values({ order_id: order.id, line_no: 1, sku: 'SKU-DEMO', quantity: 1, price_cents: 4_990 }).execute()
      return order.id
    })
    console.log(`Placed order ${orderId} in a transaction`)
    console.log(`statement_timeout SETs so far (one per ladder step change, per connection): ${statementTimeouts.join('; ') || 'none'}`)

    // ── 1. Deadline ────────────────────────────────────────────────────────
    heading('1. A 200 ms deadline against select pg_sleep(2)')
    statementTimeouts.length = 0
    {
      const cancelled = nextCancel(dialect.events)
      started = performance.now()
      const error = await withQueryContext({ timeoutMs: 200 }, () => sql`select pg_sleep(2)`.execute(db!)).then(
        () => undefined,
        (e: unknown) => e,
      )
      const elapsed = performance.now() - started
      const ok = error instanceof DeadlineExceededError
      if (error instanceof DeadlineExceededError) {
        console.log(`${error.name}: ${error.message}`)
        console.log(`  code=${error.code} phase=${error.phase} budgetMs=${error.budgetMs.toFixed(1)} waitedMs=${error.waitedMs.toFixed(1)} ranMs=${error.ranMs.toFixed(1)}`)
        console.log(`  caller got the error after ${ms(elapsed)} (pg_sleep(2) would have taken 2000 ms)`)
      } else {
        console.log(`unexpected outcome: ${String(error)}`)
      }
      console.log(`  statement_timeout sent to the server as a backstop: ${statementTimeouts.join('; ') || 'unchanged'}`)
      const cancel = await cancelled
      console.log(
        `  server-side cancel: method=${cancel.outcome?.method} confirmed=${cancel.outcome?.confirmed} ` +
          `in ${ms(cancel.outcome?.durationMs ?? NaN)}, connection ${cancel.destroyed ? 'destroyed' : 'kept'} (pid ${cancel.pid})`,
      )
      const { rows } = await admin.query<{ pid: number; state: string; query: string }>(
        `select pid, state, query from pg_stat_activity where datname = $1 and pid = $2`,
        [databaseName, cancel.pid],
      )
      const activity = rows[0]
      console.log(`  pg_stat_activity for pid ${cancel.pid}: state=${activity?.state ?? '(gone)'} last query=${JSON.stringify(activity?.query)}`)
      const sleeping = await admin.query<{ n: number }>(
        `select count(*)::int as n from pg_stat_activity where datname = $1 and state = 'active' and query like 'select pg_sleep%'`,
        [databaseName],
      )
      console.log(`  backends still running pg_sleep: ${sleeping.rows[0]?.n}`)
      const next = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(db)
      console.log(`  next query ran fine on pid ${next.rows[0]?.pid}${next.rows[0]?.pid === cancel.pid ? ' (the cancelled connection, reused clean)' : ''}`)
      scenarios.push({
        name: 'deadline 200 ms vs pg_sleep(2)',
        expected: 'DEADLINE_EXCEEDED, backend idle',
        got: `${error instanceof GovernorError ? error.code : String(error)}, backend ${activity?.state ?? 'gone'}`,
        elapsedMs: elapsed,
        ok: ok && activity?.state !== 'active' && sleeping.rows[0]?.n === 0,
      })
    }

    // ── 2. Abort ───────────────────────────────────────────────────────────
    heading('2. An AbortController aborted 300 ms into select pg_sleep(2)')
    {
      const controller = new AbortController()
      const cancelled = nextCancel(dialect.events)
      setTimeout(() => controller.abort(new Error('client went away')), 300)
      started = performance.now()
      const error = await withQueryContext({ signal: controller.signal }, () => sql`select pg_sleep(2)`.execute(db!)).then(
        () => undefined,
        (e: unknown) => e,
      )
      const elapsed = performance.now() - started
      if (error instanceof QueryCanceledError) {
        console.log(`${error.name}: ${error.message}`)
        console.log(`  code=${error.code} phase=${error.phase} waitedMs=${error.waitedMs.toFixed(1)} ranMs=${error.ranMs.toFixed(1)} reason=${JSON.stringify(String(error.reason))}`)
      } else {
        console.log(`unexpected outcome: ${String(error)}`)
      }
      const cancel = await cancelled
      const { rows } = await admin.query<{ state: string }>(`select state from pg_stat_activity where pid = $1`, [cancel.pid])
      console.log(`  server-side cancel: method=${cancel.outcome?.method} confirmed=${cancel.outcome?.confirmed}; pid ${cancel.pid} is now ${rows[0]?.state ?? 'gone'}`)
      scenarios.push({
        name: 'abort after 300 ms',
        expected: 'QUERY_CANCELED, backend idle',
        got: `${error instanceof GovernorError ? error.code : String(error)}, backend ${rows[0]?.state ?? 'gone'}`,
        elapsedMs: elapsed,
        ok: error instanceof QueryCanceledError && rows[0]?.state !== 'active',
      })
    }

    // ── 3. Bounded wait for a connection ───────────────────────────────────
    heading('3. Pool exhausted: a 150 ms request does not queue forever')
    {
      // Four slow queries take all four connections of the pool.
      const hogs = Array.from({ length: 4 }, () => withQueryContext({ timeoutMs: 3_000 }, () => sql`select pg_sleep(0.8)`.execute(db!)))
      await new Promise((resolve) => setTimeout(resolve, 100))
      started = performance.now()
      const error = await withQueryContext({ timeoutMs: 150 }, () => sql`select 1`.execute(db!)).then(
        () => undefined,
        (e: unknown) => e,
      )
      const elapsed = performance.now() - started
      if (error instanceof DeadlineExceededError) {
        console.log(`${error.name}: ${error.message}`)
        console.log(`  code=${error.code} phase=${error.phase} waitedMs=${error.waitedMs.toFixed(1)}; it left the queue at its deadline`)
      } else if (error instanceof GovernorError && error.code === 'LOAD_SHED') {
        // Admission predicted that the wait could not fit the budget and refused at once.
        const { reason, retryAfterMs } = error as GovernorError & { reason?: string; retryAfterMs?: number }
        console.log(`${error.name}: ${error.message}`)
        console.log(`  code=${error.code} reason=${reason} retryAfterMs=${retryAfterMs}; refused up front instead of queueing`)
      } else {
        console.log(`unexpected outcome: ${String(error)}`)
      }
      await Promise.all(hogs)
      console.log('  the four slow queries finished normally; the pool is free again')
      scenarios.push({
        name: 'wait for a connection, 150 ms budget',
        expected: 'DEADLINE_EXCEEDED (waiting) or LOAD_SHED',
        got: error instanceof DeadlineExceededError ? `${error.code} (${error.phase})` : error instanceof GovernorError ? error.code : String(error),
        elapsedMs: elapsed,
        ok: (error instanceof DeadlineExceededError && error.phase === 'waiting') || (error instanceof GovernorError && error.code === 'LOAD_SHED'),
      })
    }
  } finally {
    heading('Summary')
    for (const s of scenarios) {
      console.log(`${s.ok ? 'ok  ' : 'FAIL'} ${s.name.padEnd(38)} ${ms(s.elapsedMs).padStart(10)}  ${s.got}${s.ok ? '' : ` (expected ${s.expected})`}`)
    }
    started = performance.now()
    await db?.destroy().catch((error: unknown) => console.error('demo: destroying Kysely failed:', error))
    if (databaseCreated) await admin.query(`drop database if exists ${databaseName} with (force)`).catch(() => {})
    await admin.end().catch(() => {})
    await server.stop()
    console.log(`\nServer stopped in ${ms(performance.now() - started)}; demo took ${ms(performance.now() - t0)} in all.`)
  }
  if (scenarios.length < 3 || scenarios.some((s) => !s.ok)) {
    process.exitCode = 1
    console.error('demo: some scenarios did not behave as expected')
  }
}

main().catch((error: unknown) => {
  console.error('demo failed:', error)
  process.exitCode = 1
})
