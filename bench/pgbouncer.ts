/**
 * Behind PgBouncer 1.x in transaction pooling (issue 21), side by side in one
 * run: Kysely 0.29's PostgresDialect with `'ignore query'` and with
 * `'cancel query'`, pg-governor with `pooler: 'none'` (what a user gets who
 * does not set the option) and pg-governor with `pooler: 'pgbouncer-transaction'`:
 * with statements without parameters (which carry their deadline as SET
 * LOCALs in the same simple query), the same with `deadlineOnServerClock` (the
 * server works the time left out) and with `pg_sleep($1)` (which carries them
 * as extended-protocol statements in front of its own, before one Sync).
 *
 * Each setup gets a PgBouncer of its own (transaction pooling,
 * default_pool_size 4, started here as in the tests), our pool (max 8) and a
 * second application's plain pg.Pool (max 4) on the same PgBouncer.
 *
 * 1. Cancels: 20 × `select pg_sleep(5)` at once with a 300 ms deadline
 *    (Kysely: `execute({ signal: AbortSignal.timeout(300) })`), while the
 *    other application runs short statements checking their own answers. A
 *    monitor on a direct connection polls pg_stat_activity every 5 ms from the
 *    deadline on: when each of our backends was last seen running (ms after
 *    the deadline; the monitor's longest gap between polls is printed too),
 *    how many still run 1 s after it; rejections (ms after the deadline);
 *    wrong cancels (the other application's statements that failed, 57014
 *    or otherwise, or answered wrongly).
 * 2. Leaks: after 100 of our statements with deadlines of 0.2-9 s, half inside
 *    transactions, the other application's 200 × `show statement_timeout`
 *    (not the server default = leaked), then its 10 × `pg_sleep(1.5)` with no
 *    timeout of its own (killed with 57014 = a bystander killed).
 * 3. PgBouncer alive at the end (accepts a connection and answers).
 * 4. Per-statement cost of the timeout carriers, `select 1` with a 5 s
 *    deadline, one client, sequential (ms per statement, median of rounds):
 *    direct (pg-governor, cached session SET), and through PgBouncer:
 *    pg-governor 'pgbouncer-transaction' (the deadline carried in the
 *    statement's own simple query; and `select $1`, carried by the extended
 *    protocol),
 *    Kysely ('ignore query', no carrier), and raw pg carriers that cannot leak:
 *    `SET LOCAL ...; select 1` as one simple query (an implicit transaction,
 *    only without parameters), `begin; set local; select 1; commit` as four
 *    round trips, and the same four pipelined (pg 8.23 `pipeline: true`).
 * 5. Client death (DESIGN.md invariant 3): a child process runs
 *    `select pg_sleep(8)` through PgBouncer and is SIGKILLed 300 ms later;
 *    how long the backend runs on after, with no carrier (Kysely, or a
 *    statement pg-governor cannot carry), with the implicit
 *    `SET LOCAL statement_timeout = 1000` alone, with it and the close check
 *    (`SET LOCAL client_connection_check_interval = 10`: what
 *    'pgbouncer-transaction' carries), with PgBouncer's `query_timeout = 1`, and
 *    with the server's `client_connection_check_interval = 100ms` (set on the
 *    database).
 *
 * Knobs: BENCH_COST_STATEMENTS (200 per carrier and round), BENCH_ROUNDS (30; short rounds, rotated, so that
 * the load of a shared machine hits every carrier alike; the median is printed), PG_BENCH_URL.
 *
 *   npx tsx bench/pgbouncer.ts      (npm run bench:pgbouncer)
 */
import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import { pgbouncerBinary, startPgBouncer } from '../test/support/pgbouncer.js'
import { envInt } from './support/env.js'
import { check, fmt, printChecks, printTable, type Cell, type Check } from './support/format.js'
import type { Governor } from './support/lib.js'
import { runBench, sleep } from './support/run.js'
import { median, summarize } from './support/stats.js'

const COST_STATEMENTS = envInt('BENCH_COST_STATEMENTS', 200)
const ROUNDS = envInt('BENCH_ROUNDS', 30)
const DEADLINE_MS = 300
const SLEEPERS = 20

type SetupKey = 'kysely-ignore' | 'kysely-cancel' | 'governor-none' | 'governor-transaction' | 'governor-server-clock' | 'governor-transaction-param'
const SETUPS: readonly { key: SetupKey; label: string }[] = [
  { key: 'kysely-ignore', label: "Kysely 'ignore query'" },
  { key: 'kysely-cancel', label: "Kysely 'cancel query'" },
  { key: 'governor-none', label: "pg-governor pooler 'none'" },
  { key: 'governor-transaction', label: "pg-governor 'pgbouncer-transaction'" },
  { key: 'governor-server-clock', label: 'pg-governor, deadlineOnServerClock' },
  { key: 'governor-transaction-param', label: "pg-governor 'pgbouncer-transaction', pg_sleep($1)" },
]

interface SetupResult {
  readonly stillRunningAfter1s: number
  readonly stoppedAfterDeadlineMs: number[]
  /** The monitor's longest gap between two polls from the deadline on: a stop is seen up to this late. */
  readonly longestPollGapMs: number
  readonly rejectedAfterDeadlineMs: number[]
  readonly wrongCancels: number
  readonly bystanderStatements: number
  readonly leaked: number
  readonly leakedValues: string[]
  readonly bystandersKilled: number
  readonly alive: boolean
  readonly cancelMethods: string
}

function bystanderPool(url: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max: 4, application_name: 'bench bystander' })
  pool.on('error', () => {})
  return pool
}

/** Our side of one setup: a Kysely instance and how it runs a statement with a deadline. */
function ours(governor: Governor, key: SetupKey, url: string): { db: Kysely<any>; run: <R>(query: ReturnType<typeof sql<R>>, timeoutMs: number) => Promise<unknown>; cancels: string[] } {
  const pool = new pg.Pool({ connectionString: url, max: 8, application_name: 'bench ours' })
  pool.on('error', () => {})
  const cancels: string[] = []
  if (key === 'kysely-ignore' || key === 'kysely-cancel') {
    const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) })
    const strategy = key === 'kysely-ignore' ? 'ignore query' : 'cancel query'
    return { db, cancels, run: (query, timeoutMs) => query.execute(db, { signal: AbortSignal.timeout(timeoutMs), inflightQueryAbortStrategy: strategy }) }
  }
  const pooler = key === 'governor-none' ? 'none' : key === 'governor-server-clock' ? ({ mode: 'pgbouncer-transaction', deadlineOnServerClock: true } as const) : 'pgbouncer-transaction'
  const dialect = new governor.GovernedPostgresDialect({ pool, pooler, admission: { feasibility: false } })
  dialect.events.on('cancel', (event) => cancels.push(`${event.outcome?.method ?? 'failed'}${event.outcome?.confirmed ? ' confirmed' : ''}${event.destroyed ? ' destroyed' : ''}`))
  const db = new Kysely<any>({ dialect })
  return { db, cancels, run: (query, timeoutMs) => governor.withQueryContext({ timeoutMs }, () => query.execute(db)) }
}

async function runSetup(governor: Governor, serverUrl: string, monitor: pg.Client, key: SetupKey): Promise<SetupResult> {
  const bouncer = await startPgBouncer(serverUrl, { poolMode: 'transaction', defaultPoolSize: 4 })
  const url = bouncer.urlFor(serverUrl)
  const { db, run, cancels } = ours(governor, key, url)
  const bystanders = bystanderPool(url)
  try {
    // 1. cancels, with the other application's short statements beside them.
    let stop = false
    let wrongCancels = 0
    let bystanderStatements = 0
    const bystanding = Promise.all(
      [0, 1].map(async (worker) => {
        for (let i = 0; !stop && i < 20_000; i++) {
          const n = worker * 1_000_000 + i
          try {
            const { rows } = await bystanders.query<{ n: number }>('select $1::int as n from pg_sleep(0.005)', [n])
            if (rows[0]?.n !== n) wrongCancels++
          } catch {
            wrongCancels++
          }
          bystanderStatements++
        }
      }),
    )
    const tag = `bench_pgb_${key.replace('-', '_')}_${Date.now()}`
    const startedAt = performance.now()
    const deadlineAt = startedAt + DEADLINE_MS
    const rejectedAt: number[] = []
    const sleepers = Array.from({ length: SLEEPERS }, () =>
      // With a parameter pg sends the statement by the extended protocol: it carries its deadline as Parse/Bind/Executes in front.
      run(key === 'governor-transaction-param' ? sql`select pg_sleep(${5}) /* ${sql.raw(tag)} */` : sql.raw(`select pg_sleep(5) /* ${tag} */`), DEADLINE_MS).then(
        () => rejectedAt.push(Infinity),
        () => rejectedAt.push(performance.now()),
      ),
    )
    // From the deadline on: when each of our backends stops.
    await sleep(Math.max(0, deadlineAt - performance.now()))
    const lastSeen = new Map<number, number>()
    let stillRunningAfter1s = 0
    let longestPollGapMs = 0
    let polledAt = performance.now()
    while (performance.now() < deadlineAt + 1_000) {
      const { rows } = await monitor.query<{ pid: number }>(`select pid from pg_stat_activity where state = 'active' and strpos(query, $1) > 0 and pid <> pg_backend_pid()`, [tag])
      const at = performance.now()
      longestPollGapMs = Math.max(longestPollGapMs, at - polledAt)
      polledAt = at
      for (const row of rows) lastSeen.set(row.pid, at)
      stillRunningAfter1s = rows.length
      await sleep(5)
    }
    const stoppedAfterDeadlineMs = [...lastSeen.values()].filter((at) => at < deadlineAt + 990).map((at) => Math.max(0, at - deadlineAt))
    await Promise.all(sleepers)
    stop = true
    await bystanding
    // What still runs (Kysely's, and what waits in PgBouncer's queue behind it) is ended here, so the next part starts clean.
    await cancelTagged(monitor, tag)

    // 2. leaks.
    for (let i = 0; i < 100; i++) {
      // Mixed deadlines, longest first: each server connection keeps whichever step came last (a short one here).
      const timeoutMs = [9_000, 2_500, 700, 200][i % 4] as number
      await run(sql`select 1`, timeoutMs).catch(() => {})
      if (i % 2 === 1 && key.startsWith('governor')) {
        // On a loaded machine a 200 ms budget can run out: that is not what this part measures.
        await governor.withQueryContext({ timeoutMs }, () => db.transaction().execute((trx) => sql`select 1`.execute(trx))).catch(() => {})
      }
    }
    const leakedValues: string[] = []
    for (let i = 0; i < 200; i++) {
      const { rows } = await bystanders.query<{ statement_timeout: string }>('show statement_timeout')
      const value = rows[0]?.statement_timeout ?? '?'
      if (value !== '0') leakedValues.push(value)
    }
    const killed = await Promise.all(
      Array.from({ length: 10 }, () => bystanders.query('select pg_sleep(1.5)').then(
        () => 0,
        (error: { code?: string }) => (error.code === '57014' ? 1 : 0),
      )),
    )
    const alive = await bouncer.alive() && (await bystanders.query('select 1').then(() => true, () => false))
    const counts = new Map<string, number>()
    for (const method of cancels) counts.set(method, (counts.get(method) ?? 0) + 1)
    return {
      stillRunningAfter1s,
      stoppedAfterDeadlineMs,
      longestPollGapMs,
      rejectedAfterDeadlineMs: rejectedAt.filter(Number.isFinite).map((at) => at - deadlineAt),
      wrongCancels,
      bystanderStatements,
      leaked: leakedValues.length,
      leakedValues: [...new Set(leakedValues)],
      bystandersKilled: killed.reduce((a, b) => a + b, 0),
      alive,
      cancelMethods: [...counts].map(([method, count]) => `${count} ${method}`).join(', ') || '-',
    }
  } finally {
    await db.destroy().catch(() => {})
    await bystanders.end().catch(() => {})
    await bouncer.stop()
  }
}

/** Cancels (on a direct connection; a terminate would crash Kysely, whose checked-out clients have no error listener) the statements tagged `tag` until none has been seen for half a second (30 s at most). */
async function cancelTagged(monitor: pg.Client, tag: string): Promise<void> {
  let quietSince = performance.now()
  for (const until = performance.now() + 30_000; performance.now() < until && performance.now() - quietSince < 500; ) {
    const { rows } = await monitor.query(
      `select pg_cancel_backend(pid) from pg_stat_activity where state = 'active' and strpos(query, $1) > 0 and pid <> pg_backend_pid()`,
      [tag],
    )
    if (rows.length > 0) quietSince = performance.now()
    await sleep(50)
  }
}

// ---------------------------------------------------------------------------
// 4. carrier cost

type Carrier = { readonly label: string; readonly viaBouncer: boolean; readonly make: (governor: Governor, url: string) => Promise<{ one: () => Promise<unknown>; end: () => Promise<void> }> }

const CARRIERS: readonly Carrier[] = [
  {
    label: "direct: pg-governor (cached session SET)",
    viaBouncer: false,
    make: async (governor, url) => governedOne(governor, url, 'none'),
  },
  {
    label: 'direct: Kysely (no carrier)',
    viaBouncer: false,
    make: async (_governor, url) => kyselyOne(url),
  },
  {
    label: "PgBouncer: pg-governor 'pgbouncer-transaction' (deadline and close check carried in the statement's simple query)",
    viaBouncer: true,
    make: async (governor, url) => governedOne(governor, url, 'pgbouncer-transaction'),
  },
  {
    label: "PgBouncer: pg-governor pooler 'none' (leaks; the same path, for comparison)",
    viaBouncer: true,
    make: async (governor, url) => governedOne(governor, url, 'none'),
  },
  {
    label: 'PgBouncer: Kysely (no carrier)',
    viaBouncer: true,
    make: async (_governor, url) => kyselyOne(url),
  },
  {
    label: "PgBouncer: raw 'set local statement_timeout = 5000; select 1' (one simple query, no parameters)",
    viaBouncer: true,
    make: async (_governor, url) => rawOne(url, false, (client) => client.query('set local statement_timeout = 5000; select 1')),
  },
  {
    label: 'PgBouncer: raw begin; set local; select 1; commit (4 round trips)',
    viaBouncer: true,
    make: async (_governor, url) =>
      rawOne(url, false, async (client) => {
        await client.query('begin')
        await client.query('set local statement_timeout = 5000')
        await client.query('select 1')
        await client.query('commit')
      }),
  },
  {
    label: 'PgBouncer: raw begin; set local; select 1; commit (pipelined, pg 8.23)',
    viaBouncer: true,
    make: async (_governor, url) =>
      rawOne(url, true, (client) =>
        Promise.all([client.query('begin'), client.query('set local statement_timeout = 5000'), client.query('select $1::int', [1]), client.query('commit')]),
      ),
  },
  {
    label: 'PgBouncer: pg-governor, deadlineOnServerClock (the server works the time left out)',
    viaBouncer: true,
    make: async (governor, url) => governedOne(governor, url, { mode: 'pgbouncer-transaction', deadlineOnServerClock: true }),
  },
  // With a parameter pg sends an extended-protocol query: the deadline and close check go as two more statements before its Sync.
  {
    label: "PgBouncer: pg-governor 'pgbouncer-transaction', select $1 (carried by the extended protocol)",
    viaBouncer: true,
    make: async (governor, url) => governedOne(governor, url, 'pgbouncer-transaction', true),
  },
  {
    label: 'PgBouncer: Kysely, select $1',
    viaBouncer: true,
    make: async (_governor, url) => kyselyOne(url, true),
  },
]

function governedOne(governor: Governor, url: string, pooler: 'none' | 'pgbouncer-transaction' | { mode: 'pgbouncer-transaction'; deadlineOnServerClock: true }, withParameter = false): { one: () => Promise<unknown>; end: () => Promise<void> } {
  const pool = new pg.Pool({ connectionString: url, max: 1 })
  const db = new Kysely<any>({ dialect: new governor.GovernedPostgresDialect({ pool, pooler }) })
  const query = withParameter ? sql`select ${1}::int` : sql`select 1`
  return { one: () => governor.withQueryContext({ timeoutMs: 5_000 }, () => query.execute(db)), end: () => db.destroy() }
}

function kyselyOne(url: string, withParameter = false): { one: () => Promise<unknown>; end: () => Promise<void> } {
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url, max: 1 }) }) })
  const query = withParameter ? sql`select ${1}::int` : sql`select 1`
  return { one: () => query.execute(db), end: () => db.destroy() }
}

async function rawOne(url: string, pipeline: boolean, body: (client: pg.Client) => Promise<unknown>): Promise<{ one: () => Promise<unknown>; end: () => Promise<void> }> {
  const client = new pg.Client({ connectionString: url, ...(pipeline ? { pipeline: true } : {}) } as pg.ClientConfig)
  await client.connect()
  return { one: () => body(client), end: () => client.end() }
}

async function carrierCosts(governor: Governor, serverUrl: string): Promise<{ label: string; msPerStatement: number; rounds: number[] }[]> {
  const bouncer = await startPgBouncer(serverUrl, { poolMode: 'transaction', defaultPoolSize: 4 })
  try {
    const setups = await Promise.all(
      CARRIERS.map(async (carrier) => {
        try {
          return { carrier, ...(await carrier.make(governor, carrier.viaBouncer ? bouncer.urlFor(serverUrl) : serverUrl)), failure: undefined as string | undefined }
        } catch (error) {
          return { carrier, one: () => Promise.resolve(), end: () => Promise.resolve(), failure: String(error) }
        }
      }),
    )
    const rounds = new Map<string, number[]>()
    for (let round = 0; round < ROUNDS; round++) {
      // Interleaved, order rotated by round, so drift in the machine's load hits every carrier alike.
      for (let i = 0; i < setups.length; i++) {
        const setup = setups[(i + round) % setups.length]!
        if (setup.failure) continue
        if (round === 0) for (let w = 0; w < 100; w++) await setup.one()
        const started = performance.now()
        for (let s = 0; s < COST_STATEMENTS; s++) await setup.one()
        const perStatement = (performance.now() - started) / COST_STATEMENTS
        rounds.set(setup.carrier.label, [...(rounds.get(setup.carrier.label) ?? []), perStatement])
      }
    }
    await Promise.all(setups.map((setup) => setup.end().catch(() => {})))
    return setups.map((setup) => {
      const times = rounds.get(setup.carrier.label) ?? [NaN]
      return { label: setup.failure ? `${setup.carrier.label} (FAILED: ${setup.failure})` : setup.carrier.label, msPerStatement: median(times), rounds: times }
    })
  } finally {
    await bouncer.stop()
  }
}

// ---------------------------------------------------------------------------
// 5. client death

const pgModule = createRequire(import.meta.url).resolve('pg')

async function clientDeath(monitor: pg.Client, serverUrl: string, database: string, variant: 'none' | 'set-local' | 'set-local-close-check' | 'query-timeout' | 'check-interval'): Promise<number> {
  const bouncer = await startPgBouncer(serverUrl, { poolMode: 'transaction', defaultPoolSize: 4, settings: variant === 'query-timeout' ? { query_timeout: 1 } : {} })
  const url = new URL(bouncer.urlFor(serverUrl))
  url.pathname = `/${database}`
  const tag = `bench_pgb_death_${variant.replace('-', '_')}_${Date.now()}`
  const carried = { 'set-local': 'set local statement_timeout = 1000; ', 'set-local-close-check': 'set local statement_timeout = 1000; set local client_connection_check_interval = 10; ' }
  const text = `${variant === 'set-local' || variant === 'set-local-close-check' ? carried[variant] : ''}select pg_sleep(8) /* ${tag} */`
  const script = `const pg = require(process.env.PG_MODULE); const c = new pg.Client({ connectionString: process.env.URL }); c.connect().then(() => c.query(process.env.SQL)).catch(() => {})`
  const child = spawn(process.execPath, ['-e', script], { env: { ...process.env, PG_MODULE: pgModule, URL: url.toString(), SQL: text }, stdio: 'ignore' })
  try {
    let pid: number | undefined
    for (let i = 0; i < 500 && pid === undefined; i++) {
      const { rows } = await monitor.query<{ pid: number }>(`select pid from pg_stat_activity where state = 'active' and strpos(query, $1) > 0 and pid <> pg_backend_pid()`, [tag])
      pid = rows[0]?.pid
      if (pid === undefined) await sleep(10)
    }
    if (pid === undefined) return NaN
    await sleep(300)
    child.kill('SIGKILL')
    const killedAt = performance.now()
    for (;;) {
      const { rows } = await monitor.query<{ state: string }>('select state from pg_stat_activity where pid = $1', [pid])
      if (rows[0]?.state !== 'active') return performance.now() - killedAt
      if (performance.now() - killedAt > 10_000) return Infinity
      await sleep(10)
    }
  } finally {
    child.kill('SIGKILL')
    await bouncer.stop()
  }
}

// ---------------------------------------------------------------------------

function pctl(values: number[], q: number): number {
  return values.length === 0 ? NaN : summarize(values)[q === 0.5 ? 'p50' : q === 0.99 ? 'p99' : 'max']
}

runBench('pgbouncer', async (server, governor) => {
  if (!pgbouncerBinary()) {
    console.log('\n!!! SKIPPED: pgbouncer is not installed (apt-get install -y pgbouncer) !!!')
    return { allPassed: false }
  }
  const monitor = new pg.Client({ connectionString: server.url })
  await monitor.connect()
  try {
    const results = new Map<SetupKey, SetupResult>()
    for (const setup of SETUPS) {
      console.log(`[pgbouncer] ${setup.label} ...`)
      results.set(setup.key, await runSetup(governor, server.url, monitor, setup.key))
    }
    const column = (fn: (result: SetupResult) => Cell): Cell[] => SETUPS.map((setup) => fn(results.get(setup.key) as SetupResult))
    printTable(
      `PgBouncer (transaction pooling, default_pool_size 4), our pool max 8, a second application's pg.Pool beside it`,
      ['', ...SETUPS.map((setup) => setup.label)],
      [
        [`of ${SLEEPERS} × pg_sleep(5), ${DEADLINE_MS} ms deadline: backends running 1 s after the deadline`, ...column((r) => r.stillRunningAfter1s)],
        ['  backends stopped after the deadline, ms (max; running ones excluded)', ...column((r) => fmt(Math.max(0, ...r.stoppedAfterDeadlineMs), 1))],
        ["  the monitor's longest gap between polls, ms (a stop is seen up to this late)", ...column((r) => fmt(r.longestPollGapMs, 1))],
        ['  rejection after the deadline, ms (p50 / p99)', ...column((r) => `${fmt(pctl(r.rejectedAfterDeadlineMs, 0.5), 1)} / ${fmt(pctl(r.rejectedAfterDeadlineMs, 0.99), 1)}`)],
        ["another client's show statement_timeout not the default, of 200", ...column((r) => `${r.leaked}${r.leakedValues.length ? ` (${r.leakedValues.join(', ')})` : ''}`)],
        ["another application's pg_sleep(1.5) killed with 57014, of 10", ...column((r) => r.bystandersKilled)],
        ["wrong cancels (the other application's failed or wrong statements)", ...column((r) => `${r.wrongCancels} of ${r.bystanderStatements}`)],
        ['cancel events', ...column((r) => r.cancelMethods)],
        ['PgBouncer alive after', ...column((r) => (r.alive ? 'yes' : 'NO'))],
      ],
    )

    const costs = await carrierCosts(governor, server.url)
    // Ratios are medians of per-round ratios: both figures of a pair were taken at most one round apart.
    // The Kysely row each carrier compares with: the same path, and the same statement (the last two rows have a parameter).
    const kyselyBeside = (i: number): number => (i === CARRIERS.length - 2 ? CARRIERS.length - 1 : CARRIERS[i]?.viaBouncer ? 4 : 1)
    const paired = (a: number, b: number): number => median((costs[a]?.rounds ?? []).map((time, round) => time / (costs[b]?.rounds[round] ?? NaN)))
    printTable(
      `Per-statement cost of the timeout carriers: select 1 with a 5 s deadline, one client, sequential (median of ${ROUNDS} rounds × ${COST_STATEMENTS}; ratios paired by round)`,
      ['carrier', 'ms/statement', 'vs pg-governor direct', 'vs Kysely on the same path'],
      costs.map((cost, i) => [cost.label, fmt(cost.msPerStatement, 3), `${fmt(paired(i, 0), 2)}x`, `${fmt(paired(i, kyselyBeside(i)), 2)}x`]),
    )

    const deathDb = `bench_pgb_death_${Date.now()}`
    await monitor.query(`create database ${deathDb}`)
    const death: [string, number][] = []
    try {
      death.push(['no carrier (Kysely; a statement pg-governor cannot carry)', await clientDeath(monitor, server.url, deathDb, 'none')])
      death.push(["implicit 'set local statement_timeout = 1000; ...' alone", await clientDeath(monitor, server.url, deathDb, 'set-local')])
      death.push(["the same and 'set local client_connection_check_interval = 10' (what pgbouncer-transaction carries)", await clientDeath(monitor, server.url, deathDb, 'set-local-close-check')])
      death.push(["PgBouncer query_timeout = 1 (s)", await clientDeath(monitor, server.url, deathDb, 'query-timeout')])
      await monitor.query(`alter database ${deathDb} set client_connection_check_interval = '100ms'`)
      death.push(["server client_connection_check_interval = 100ms", await clientDeath(monitor, server.url, deathDb, 'check-interval')])
    } finally {
      await monitor.query(`drop database if exists ${deathDb} with (force)`).catch(() => {})
    }
    printTable(
      'Client death: pg_sleep(8) through PgBouncer, client SIGKILLed after 300 ms: how long the backend ran on',
      ['backstop', 'ms after the kill'],
      death.map(([label, ms]) => [label, Number.isFinite(ms) ? fmt(ms, 0) : 'still running at 10 s']),
    )

    const ours = results.get('governor-transaction') as SetupResult
    const param = results.get('governor-transaction-param') as SetupResult
    const clock = results.get('governor-server-clock') as SetupResult
    const checks: Check[] = [
      check('pg-governor: backends running 1 s after the deadline', ours.stillRunningAfter1s, '<=', 0),
      check('pg-governor: latest backend stop after the deadline', Math.max(0, ...ours.stoppedAfterDeadlineMs), '<=', 50, 'ms'),
      check('pg-governor: rejection after the deadline, p99', pctl(ours.rejectedAfterDeadlineMs, 0.99), '<=', 10, 'ms'),
      check('pg-governor: leaked statement_timeouts', ours.leaked, '<=', 0),
      check('pg-governor: bystanders killed', ours.bystandersKilled, '<=', 0),
      check('pg-governor: wrong cancels', ours.wrongCancels, '<=', 0),
      check('pg-governor: PgBouncer alive', ours.alive ? 1 : 0, '>=', 1),
      // The carrier's own cost: the same library on the same path, leaking (session SET, cached) vs not.
      check("per-statement cost of 'pgbouncer-transaction' vs pooler 'none', same path", paired(2, 3), '<=', 1.1, 'x'),
      check('pg-governor vs Kysely behind PgBouncer, over the same ratio direct', paired(2, 4) / paired(0, 1), '<=', 1.1, 'x'),
      check('the same with deadlineOnServerClock', paired(8, 4) / paired(0, 1), '<=', 1.1, 'x'),
      check('deadlineOnServerClock: latest backend stop after the deadline', Math.max(0, ...clock.stoppedAfterDeadlineMs), '<=', 50, 'ms'),
      check('deadlineOnServerClock: backends running 1 s after the deadline', clock.stillRunningAfter1s, '<=', 0),
      check('the same for select $1 (carried by the extended protocol)', paired(CARRIERS.length - 2, CARRIERS.length - 1) / paired(0, 1), '<=', 1.1, 'x'),
      // A statement with a parameter carries its deadline by the extended protocol: no CancelRequest (slow through PgBouncer 1.18).
      check('pg-governor, pg_sleep($1): backends running 1 s after the deadline', param.stillRunningAfter1s, '<=', 0),
      check('pg-governor, pg_sleep($1): latest backend stop after the deadline', Math.max(0, ...param.stoppedAfterDeadlineMs), '<=', 50, 'ms'),
    ]
    printChecks('targets (issue 21)', checks)
    return { allPassed: checks.every((c) => c.pass) }
  } finally {
    await monitor.end()
  }
})
