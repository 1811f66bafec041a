/**
 * Issue 12's fault table: deadlines and cancels under network faults, for
 * pg-governor and Kysely 0.29's own PostgresDialect side by side in one run.
 *
 * Each setup has a pg.Pool (max 4) whose connections (and, for pg-governor,
 * its control connection and protocol cancels; for Kysely, its per-cancel
 * connections) go through test/support/fault-proxy.ts on 127.0.0.1. Every
 * query is `select $n::int as n` with its value checked. Per fault and setup:
 *   1. warm-up: 40 queries, no fault;
 *   2. the fault for `faultMs`; meanwhile 8 workers each run queries one after
 *      the other, each with the row's deadline (pg-governor:
 *      withQueryContext({ timeoutMs }); Kysely: execute({ signal:
 *      AbortSignal.timeout(ms), inflightQueryAbortStrategy: 'cancel query' }));
 *   3. the heal; from that instant 100 queries, 4 at a time, same deadline.
 * A worker whose query failed before its deadline waits before its next one:
 * the error's retryAfterMs (LOAD_SHED), at least 10 ms, at most 1 s (the same
 * rule for both setups).
 * Measured: deadline errors; lateness = settle time - deadline, over every
 * query that settled after its deadline (p50/p99/max); recovery = heal ->
 * first success of a query started after the heal; errors after the heal
 * (any failure of the 100); wrong results (a row with another value); wrong
 * cancels (SQLSTATE 57014 reaching a query before its own deadline, or one
 * that was never stopped); uncaught errors in the process; the most server
 * connections of the setup's application_name seen (sampled every 20 ms from
 * an admin connection that bypasses the proxy); the longest event-loop stall
 * of this process, a floor under any lateness. The proxy runs in a child
 * process of its own (test/support/fault-proxy-process.ts), so that its
 * timers and copies do not stall the process that measures; BENCH_PROXY=inline
 * runs it in this process, as the first version of this bench did.
 * Faults:
 *   - latency: server->client 2000 ± 500 ms for 4 s, deadline 1500 ms;
 *   - partition: nothing delivered either way for 3 s, then healed (held
 *     bytes are delivered late), deadline 1000 ms;
 *   - reset: every connection reset, new ones refused for 1 s, deadline 3000 ms;
 *   - timeout: toxiproxy's timeout, data dropped and every connection (new
 *     ones too) closed after 500 ms, for 2 s, deadline 1500 ms: connections
 *     lost for good.
 * Targets (pg-governor): lateness p99 <= 10 ms in every fault, 0 wrong cancels,
 * 0 wrong results, 0 errors after the heal.
 *
 * Knobs: BENCH_FAULTS (name prefixes, comma-separated; all), BENCH_FAULT_RUNS (3), BENCH_FAULT_WORKERS (8), BENCH_AFTER_HEAL (100), BENCH_PROXY (process|inline), BENCH_FAULT_DEBUG=1 (each late rejection and GC pause),
 * BENCH_LIB (build|src), PG_BENCH_URL.
 *
 *   npx tsx bench/faults.ts      (npm run bench:faults)
 */
import { Kysely, PostgresDialect, sql } from 'kysely'
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks'
import pg from 'pg'
import { startFaultProxy, type FaultProxy } from '../test/support/fault-proxy.js'
import { startFaultProxyProcess } from '../test/support/fault-proxy-process.js'
import { seededRandom } from '../test/support/seeded-random.js'
import { envInt } from './support/env.js'
import { check, fmt, printChecks, printTable, type Check } from './support/format.js'
import { loadGovernor, type Governor } from './support/lib.js'
import { startBenchServer } from './support/server.js'
import { percentileSorted, sortedCopy } from './support/stats.js'

interface FaultSpec {
  readonly name: string
  readonly deadlineMs: number
  readonly faultMs: number
  apply(proxy: FaultProxy): void
  heal(proxy: FaultProxy): void
}

const FAULTS: readonly FaultSpec[] = [
  {
    name: 'latency 2000±500 ms down',
    deadlineMs: 1_500,
    faultMs: 4_000,
    apply: (proxy) => proxy.toxics('downstream', { latencyMs: 2_000, jitterMs: 500 }),
    heal: (proxy) => proxy.clear(),
  },
  { name: 'partition 3 s, healed', deadlineMs: 1_000, faultMs: 3_000, apply: (proxy) => proxy.hold(), heal: (proxy) => proxy.heal() },
  {
    name: 'reset, refused 1 s',
    deadlineMs: 3_000,
    faultMs: 1_000,
    apply: (proxy) => {
      proxy.refuseFor(1_000)
      proxy.reset()
    },
    heal: (proxy) => proxy.clear(),
  },
  { name: 'timeout 500 ms, for 2 s', deadlineMs: 1_500, faultMs: 2_000, apply: (proxy) => proxy.timeout(500), heal: (proxy) => proxy.clear() },
]

interface Setup {
  readonly label: string
  readonly appName: string
  readonly query: (n: number, deadlineMs: number) => Promise<number>
  readonly end: () => Promise<void>
}

interface Tally {
  deadlineErrors: number
  otherErrors: number
  late: number[]
  recoveryMs: number
  errorsAfterHeal: number
  wrongResults: number
  wrongCancels: number
  uncaught: number
  maxServerConnections: number
  /** The longest event-loop stall of this process during the measure (ms): lateness cannot be below it. */
  loopStallMs: number
  /** Error kinds (class name, code, first words), for the summary below the table. */
  readonly kinds: Map<string, number>
}

const RUNS = envInt('BENCH_FAULT_RUNS', 3)
const WORKERS = envInt('BENCH_FAULT_WORKERS', 8)
const AFTER_HEAL = envInt('BENCH_AFTER_HEAL', 100)
const POOL_MAX = 4
/** `process`: the proxy runs in a child process (its stalls are not the bench's); `inline`: in this process, as before. */
const PROXY = process.env['BENCH_PROXY'] ?? 'process'
if (PROXY !== 'process' && PROXY !== 'inline') throw new Error(`BENCH_PROXY must be process or inline; got ${PROXY}`)

/** Prints every rejection 10 ms or more past its deadline (its message says when it was made: waited/ran) and every GC pause over 4 ms. */
const DEBUG = process.env['BENCH_FAULT_DEBUG'] === '1'
if (DEBUG) {
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) if (entry.duration > 4) console.log(`  [debug] gc at ${entry.startTime.toFixed(0)} ms: ${entry.duration.toFixed(1)} ms`)
  }).observe({ entryTypes: ['gc'] })
}

let uncaught = 0
process.on('uncaughtException', () => uncaught++)
process.on('unhandledRejection', () => uncaught++)

function sqlStateOf(error: unknown): string | undefined {
  for (let e = error as { code?: unknown; cause?: unknown } | undefined, i = 0; e && i < 4; e = e.cause as typeof e, i++) {
    if (typeof e.code === 'string' && /^[0-9A-Z]{5}$/.test(e.code)) return e.code
  }
  return undefined
}

function governedSetup(governor: Governor, url: string, run: number): Setup {
  const appName = `faults-governed-${run}`
  const pool = new pg.Pool({ connectionString: url, max: POOL_MAX, application_name: appName, connectionTimeoutMillis: 0 })
  const db = new Kysely<any>({ dialect: new governor.GovernedPostgresDialect({ pool }) })
  return {
    label: 'pg-governor',
    appName,
    query: async (n, deadlineMs) => {
      const { rows } = await governor.withQueryContext({ timeoutMs: deadlineMs }, () => sql<{ n: number }>`select ${n}::int as n`.execute(db))
      return rows[0]?.n ?? -1
    },
    end: () => db.destroy(),
  }
}

function kyselySetup(url: string, run: number): Setup {
  const appName = `faults-kysely-${run}`
  const pool = new pg.Pool({ connectionString: url, max: POOL_MAX, application_name: appName })
  pool.on('error', () => {})
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) })
  return {
    label: 'Kysely PostgresDialect',
    appName,
    query: async (n, deadlineMs) => {
      const { rows } = await sql<{ n: number }>`select ${n}::int as n`.execute(db, {
        signal: AbortSignal.timeout(deadlineMs),
        inflightQueryAbortStrategy: 'cancel query',
      } as never)
      return rows[0]?.n ?? -1
    },
    end: () => db.destroy(),
  }
}

async function measure(setup: Setup, fault: FaultSpec, proxy: FaultProxy, admin: pg.Client): Promise<Tally> {
  const tally: Tally = { deadlineErrors: 0, otherErrors: 0, late: [], recoveryMs: NaN, errorsAfterHeal: 0, wrongResults: 0, wrongCancels: 0, uncaught: 0, maxServerConnections: 0, loopStallMs: 0, kinds: new Map() }
  let next = 1
  const one = async (afterHeal: boolean): Promise<boolean> => {
    const n = next++
    const startedAt = performance.now()
    const deadlineAt = startedAt + fault.deadlineMs
    try {
      const got = await setup.query(n, fault.deadlineMs)
      const at = performance.now()
      if (at > deadlineAt + 1) tally.late.push(at - deadlineAt)
      if (got !== n) tally.wrongResults++
      return true
    } catch (error) {
      const at = performance.now()
      if (at >= deadlineAt - 1) {
        tally.deadlineErrors++
        tally.late.push(Math.max(0, at - deadlineAt))
      } else tally.otherErrors++
      // 57014 before this query's own deadline: someone else's cancel, or a statement_timeout that fired early.
      if (sqlStateOf(error) === '57014' && at < deadlineAt - 1) tally.wrongCancels++
      if (afterHeal) tally.errorsAfterHeal++
      // A client that honours Retry-After (LOAD_SHED carries it), and pauses 10 ms after any
      // other fast failure, as both setups' callers would; a tight loop of instant failures
      // would only measure how fast this process can fail, and starve the rest of its CPU.
      if (at < deadlineAt - 1) await new Promise((resolve) => setTimeout(resolve, Math.max(10, Math.min(1_000, (error as { retryAfterMs?: number }).retryAfterMs ?? 0))))
      const phase = (error as { phase?: string }).phase
      const lateBy = at >= deadlineAt + 10 ? ` (late ${Math.round(at - deadlineAt)} ms)` : ''
      if (DEBUG && lateBy) console.log(`  [debug] ${setup.label} at ${at.toFixed(0)} ms${lateBy}: ${(error as Error).message}`)
      const kind = `${afterHeal ? 'after heal: ' : ''}${(error as Error).constructor?.name} ${sqlStateOf(error) ?? (error as { code?: string }).code ?? ''}${phase ? ` phase ${phase}` : ''}${lateBy} ${String((error as Error).message).slice(0, 60)}`
      tally.kinds.set(kind, (tally.kinds.get(kind) ?? 0) + 1)
      return false
    }
  }
  const sampler = setInterval(() => {
    admin
      .query<{ n: number }>('select count(*)::int as n from pg_stat_activity where application_name like $1', [`${setup.appName}%`])
      .then(({ rows }) => (tally.maxServerConnections = Math.max(tally.maxServerConnections, rows[0]?.n ?? 0)), () => {})
  }, 20)
  const uncaughtBefore = uncaught
  const loopDelay = monitorEventLoopDelay({ resolution: 1 })
  loopDelay.enable()
  try {
    for (let i = 0; i < 40; i++) await one(false)
    tally.deadlineErrors = tally.otherErrors = 0
    tally.late.length = 0
    fault.apply(proxy)
    const faultEnds = performance.now() + fault.faultMs
    const workers = Array.from({ length: WORKERS }, async () => {
      while (performance.now() < faultEnds) await one(false)
    })
    await new Promise((resolve) => setTimeout(resolve, fault.faultMs))
    fault.heal(proxy)
    const healedAt = performance.now()
    let remaining = AFTER_HEAL
    const after = Array.from({ length: POOL_MAX }, async () => {
      while (remaining > 0) {
        remaining--
        if ((await one(true)) && Number.isNaN(tally.recoveryMs)) tally.recoveryMs = performance.now() - healedAt
      }
    })
    await Promise.all([...workers, ...after])
    // Let stray late packets and cancels land before the next setup.
    await new Promise((resolve) => setTimeout(resolve, 300))
  } finally {
    clearInterval(sampler)
    loopDelay.disable()
    tally.loopStallMs = loopDelay.max / 1e6
    proxy.clear()
  }
  tally.uncaught = uncaught - uncaughtBefore
  return tally
}

function row(fault: FaultSpec, label: string, tallies: readonly Tally[]): (string | number)[] {
  const late = sortedCopy(tallies.flatMap((t) => t.late))
  const sum = (pick: (t: Tally) => number): number => tallies.reduce((total, t) => total + pick(t), 0)
  const recovery = tallies.map((t) => t.recoveryMs)
  return [
    fault.name,
    label,
    sum((t) => t.deadlineErrors),
    sum((t) => t.otherErrors),
    late.length ? fmt(percentileSorted(late, 0.5), 1) : '-',
    late.length ? fmt(percentileSorted(late, 0.99), 1) : '-',
    late.length ? fmt(late[late.length - 1] as number, 1) : '-',
    recovery.map((ms) => (Number.isNaN(ms) ? 'never' : fmt(ms, 0))).join('/'),
    sum((t) => t.errorsAfterHeal),
    sum((t) => t.wrongResults),
    sum((t) => t.wrongCancels),
    sum((t) => t.uncaught),
    Math.max(...tallies.map((t) => t.maxServerConnections)),
    fmt(Math.max(...tallies.map((t) => t.loopStallMs)), 1),
  ]
}

async function main(): Promise<void> {
  const { governor, label } = await loadGovernor()
  const server = await startBenchServer()
  console.log(`PostgreSQL ${server.version} (${server.source}); library: ${label}; runs ${RUNS}, workers ${WORKERS}, pool ${POOL_MAX}; proxy ${PROXY === 'inline' ? 'in this process' : 'in a child process'}`)
  const admin = new pg.Client({ connectionString: server.url })
  await admin.connect()
  const rows: (string | number)[][] = []
  const checks: Check[] = []
  try {
    const only = process.env['BENCH_FAULTS']
    for (const fault of FAULTS.filter((f) => !only || only.split(',').some((name) => f.name.startsWith(name)))) {
      const results: Record<string, Tally[]> = { 'pg-governor': [], 'Kysely PostgresDialect': [] }
      for (let run = 0; run < RUNS; run++) {
        for (const which of run % 2 === 0 ? ['governed', 'kysely'] : ['kysely', 'governed']) {
          const proxy = PROXY === 'inline' ? await startFaultProxy(server.url, { random: seededRandom(1_000 + run) }) : await startFaultProxyProcess(server.url, { seed: 1_000 + run })
          const setup = which === 'governed' ? governedSetup(governor, proxy.url, run) : kyselySetup(proxy.url, run)
          try {
            results[setup.label]?.push(await measure(setup, fault, proxy, admin))
          } finally {
            await setup.end().catch(() => {})
            await proxy.close()
          }
        }
      }
      for (const [setupLabel, tallies] of Object.entries(results)) {
        rows.push(row(fault, setupLabel, tallies))
        const kinds = new Map<string, number>()
        for (const t of tallies) for (const [kind, n] of t.kinds) kinds.set(kind, (kinds.get(kind) ?? 0) + n)
        for (const [kind, n] of [...kinds].sort((a, b) => b[1] - a[1]).slice(0, 6)) console.log(`  ${fault.name} / ${setupLabel}: ${n} x ${kind}`)
      }
      const governed = results['pg-governor'] ?? []
      const late = sortedCopy(governed.flatMap((t) => t.late))
      checks.push(check(`${fault.name}: lateness p99`, late.length ? percentileSorted(late, 0.99) : 0, '<=', 10, 'ms'))
      checks.push(check(`${fault.name}: wrong cancels + wrong results`, governed.reduce((n, t) => n + t.wrongCancels + t.wrongResults, 0), '<=', 0))
      checks.push(check(`${fault.name}: errors after heal`, governed.reduce((n, t) => n + t.errorsAfterHeal, 0), '<=', 0))
    }
  } finally {
    await admin.end()
    await server.stop()
  }
  printTable(
    `Faults, ${RUNS} runs each (sums over runs; lateness in ms past the deadline; recovery per run in ms)`,
    ['fault', 'setup', 'deadline errs', 'early errs', 'late p50', 'late p99', 'late max', 'recovery', 'errs after heal', 'wrong results', 'wrong cancels', 'uncaught', 'max server conns', 'loop stall max'],
    rows,
  )
  printChecks('pg-governor targets', checks)
}

await main()
