/**
 * Many instances, one database (issue 22): N processes (BENCH_INSTANCES, 4)
 * whose pools over-subscribe one server's connection slots, plain Kysely and
 * pg-governor side by side in one run, one setup after the other.
 *
 * Server: an embedded PostgreSQL of its own with max_connections
 * BENCH_MAX_CONNECTIONS (30) and superuser_reserved_connections 3, so that the
 * application role (no superuser) has 27 slots, as in the issue's report.
 * Each instance: pg.Pool max BENCH_POOL_MAX (10) with idleTimeoutMillis
 * BENCH_IDLE_MS (1000) in both setups; BENCH_RATE (150) requests/s open loop for
 * BENCH_SECONDS (12); BENCH_CRITICAL_PCT (10) % critical, the rest sheddable;
 * each `select pg_sleep(BENCH_SLEEP_MS / 1000)` (50 ms) with a BENCH_DEADLINE_MS
 * (1000) deadline. The instances start at one moment, once every one has loaded.
 *
 * Setups (BENCH_FLEET_SETUPS):
 *   kysely               Kysely PostgresDialect, execute({ signal: AbortSignal.timeout(deadline) })
 *   governed             GovernedPostgresDialect, withQueryContext({ timeoutMs, criticality }),
 *                        fleet: { expectedInstances: N }; default admission
 *   governed-saturation  the same with fleet.saturation sampled every 500 ms (informational;
 *                        not in the default list)
 *   kysely-pgbouncer     Kysely as above, every instance through one PgBouncer (transaction
 *                        pooling, default_pool_size BENCH_PGBOUNCER_POOL_SIZE, 24)
 *   governed-pgbouncer   pg-governor as above with pooler: 'pgbouncer-transaction', through
 *                        the same kind of PgBouncer (one per setup, started fresh)
 * The default list is the first two, and the two PgBouncer ones when pgbouncer is installed.
 *
 * BENCH_TRACE_START_MS=2000 prints what each instance saw in its first 2 s: pool
 * counts as they change, capacity and serverLimits events, and each critical failure.
 * BENCH_TRACE=1 also prints, per instance, the connections held and the governor's
 * ceiling every half second, and why critical requests failed, by half second.
 *
 * Measured per instance: critical and sheddable success, errors callers saw by
 * kind (connection = 53300 or a connect failure; shed; deadline; other).
 * Per setup: the worst instance's critical success, goodput (successful
 * requests/s over all instances), connection errors seen by callers, and the
 * server's connection peak for the role (a superuser monitor polls
 * pg_stat_activity every 25 ms).
 *
 * Targets (pg-governor): worst instance's critical success >= 99 %, 0 connection
 * errors reaching callers, goodput >= plain Kysely's.
 *
 *   npx tsx bench/fleet.ts      (npm run bench:fleet)
 */
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { pgbouncerBinary, startPgBouncer, type PgBouncer } from '../test/support/pgbouncer.js'
import { startEmbeddedServer, type ControllableServer } from '../test/support/test-server.js'
import { envInt, envFlag } from './support/env.js'
import { check, fmt, fmtInt, printChecks, printTable, type Check } from './support/format.js'
import type { FleetSetup, FleetWorkerReport } from './support/fleet-worker.js'

const INSTANCES = envInt('BENCH_INSTANCES', 4)
const MAX_CONNECTIONS = envInt('BENCH_MAX_CONNECTIONS', 30)
const POOL_MAX = envInt('BENCH_POOL_MAX', 10)
const IDLE_MS = envInt('BENCH_IDLE_MS', 1_000)
const RATE = envInt('BENCH_RATE', 150)
const SECONDS = envInt('BENCH_SECONDS', 12)
const SLEEP_MS = envInt('BENCH_SLEEP_MS', 50)
const DEADLINE_MS = envInt('BENCH_DEADLINE_MS', 1_000)
const CRITICAL_PCT = envInt('BENCH_CRITICAL_PCT', 10, 0)
const PGBOUNCER_POOL_SIZE = envInt('BENCH_PGBOUNCER_POOL_SIZE', 24)
const SETUPS = (process.env['BENCH_FLEET_SETUPS'] ?? `kysely,governed${pgbouncerBinary() ? ',kysely-pgbouncer,governed-pgbouncer' : ''}`)
  .split(',')
  .map((s) => s.trim()) as FleetSetup[]
const WORKER = fileURLToPath(new URL('./support/fleet-worker.ts', import.meta.url))
const SUPERUSER_RESERVED = 3

interface SetupResult {
  readonly setup: FleetSetup
  readonly reports: readonly FleetWorkerReport[]
  readonly peakConnections: number
}

interface Worker {
  /** Resolves once the worker has loaded its modules (tsx compiles them, seconds under load) and waits for the start. */
  readonly ready: Promise<void>
  /** Tells the worker the common start (epoch ms). */
  start(at: number): void
  readonly report: Promise<FleetWorkerReport>
}

function runWorker(setup: FleetSetup, url: string, index: number): Worker {
  const child = spawn(process.execPath, ['--import', 'tsx', WORKER], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: {
      ...process.env,
      FLEET_SETUP: setup,
      FLEET_URL: url,
      FLEET_INSTANCES: String(INSTANCES),
      FLEET_POOL_MAX: String(POOL_MAX),
      FLEET_IDLE_MS: String(IDLE_MS),
      FLEET_RATE: String(RATE),
      FLEET_SECONDS: String(SECONDS),
      FLEET_SLEEP_MS: String(SLEEP_MS),
      FLEET_DEADLINE_MS: String(DEADLINE_MS),
      FLEET_CRITICAL_PCT: String(CRITICAL_PCT),
      FLEET_SEED: String(index + 1),
      FLEET_TRACE_MS: String(envInt('BENCH_TRACE_START_MS', 0, 0)),
    },
  })
  let out = ''
  let err = ''
  let markReady: () => void = () => {}
  const ready = new Promise<void>((resolve) => (markReady = resolve))
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString()
    if (out.startsWith('ready\n')) markReady()
  })
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()))
  const report = new Promise<FleetWorkerReport>((resolve, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), (SECONDS + 120) * 1000)
    child.once('exit', (code) => {
      clearTimeout(timer)
      markReady()
      const line = out.trim().split('\n').pop()
      if (code !== 0 || !line || line === 'ready') reject(new Error(`${setup} instance ${index + 1} exited with ${code}: ${err.slice(0, 2000)}`))
      else resolve(JSON.parse(line) as FleetWorkerReport)
    })
  })
  return { ready, report, start: (at) => child.stdin.end(`${at}\n`) }
}

async function runSetup(setup: FleetSetup, appUrl: string, monitor: pg.Client): Promise<SetupResult> {
  let peak = 0
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      const { rows } = await monitor.query<{ n: number }>(`select count(*)::int as n from pg_stat_activity where usename = 'fleet_app'`)
      peak = Math.max(peak, rows[0]?.n ?? 0)
      await new Promise((resolve) => setTimeout(resolve, 25))
    }
  })()
  try {
    const workers = Array.from({ length: INSTANCES }, (_, i) => runWorker(setup, appUrl, i))
    // Every instance is loaded before the traffic starts, at one moment for all: the start under test is the
    // fleet's connections and first queries, not module loading (which, under load, took 3-15 s and ran
    // into the first instances' start).
    await Promise.all(workers.map((w) => w.ready))
    const startAt = Date.now() + 500
    for (const w of workers) w.start(startAt)
    const reports = await Promise.all(workers.map((w) => w.report))
    return { setup, reports, peakConnections: peak }
  } finally {
    sampling = false
    await sampler
  }
}

async function waitQuiet(monitor: pg.Client): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const { rows } = await monitor.query<{ n: number }>(`select count(*)::int as n from pg_stat_activity where usename = 'fleet_app'`)
    if ((rows[0]?.n ?? 0) === 0) return
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  await monitor.query(`select pg_terminate_backend(pid) from pg_stat_activity where usename = 'fleet_app'`)
}

/**
 * With the kernel's autogroups on, `nice` ranks processes only within their session: against other
 * sessions' work (other benches, test suites) the bench gets its group's share, whatever its nice.
 * What the figures were measured under, said in the header.
 */
function schedulerNote(): string {
  const read = (path: string): string | undefined => {
    try {
      return readFileSync(path, 'utf8').trim()
    } catch {
      return undefined
    }
  }
  const enabled = read('/proc/sys/kernel/sched_autogroup_enabled')
  const group = read('/proc/self/autogroup')
  if (enabled !== '1' || !group) return 'scheduler: no autogroups, nice applies machine-wide'
  return `scheduler: autogroups on, this run's ${group} (nice -n alone does not rank it above other sessions; run it under setsid with /proc/self/autogroup set for that)`
}

const pct = (ok: number, total: number): number => (total === 0 ? 100 : (100 * ok) / total)

async function main(): Promise<number> {
  const startedAt = performance.now()
  const holder: { server?: ControllableServer } = {}
  const watchdog = setTimeout(() => {
    console.error('[fleet] watchdog: giving up after BENCH_MAX_SECONDS')
    void (holder.server?.destroy() ?? Promise.resolve()).finally(() => process.exit(2))
  }, envInt('BENCH_MAX_SECONDS', 300) * 1000)
  watchdog.unref()
  const server = await startEmbeddedServer(['-c', `max_connections=${MAX_CONNECTIONS}`, '-c', `superuser_reserved_connections=${SUPERUSER_RESERVED}`])
  holder.server = server
  const monitor = new pg.Client({ connectionString: server.url, application_name: 'fleet monitor' })
  await monitor.connect()
  try {
    await monitor.query(`create role fleet_app login password 'fleet'`)
    await monitor.query('grant pg_read_all_stats to fleet_app')
    const url = new URL(server.url)
    url.username = 'fleet_app'
    url.password = 'fleet'
    const { rows } = await monitor.query<{ v: string }>(`select current_setting('server_version') as v`)
    const slots = MAX_CONNECTIONS - SUPERUSER_RESERVED
    console.log(
      `[fleet] PostgreSQL ${rows[0]?.v} (embedded, max_connections ${MAX_CONNECTIONS}, ${slots} slots for the application role); node ${process.version}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`,
    )
    console.log(`[fleet] ${schedulerNote()}`)
    console.log(
      `[fleet] ${INSTANCES} instances x pool max ${POOL_MAX} (= ${INSTANCES * POOL_MAX} wanted for ${slots} slots), idleTimeoutMillis ${IDLE_MS}; ` +
        `${RATE} req/s each for ${SECONDS} s, ${SLEEP_MS} ms queries, ${CRITICAL_PCT}% critical, ${DEADLINE_MS} ms deadline`,
    )
    const results: SetupResult[] = []
    for (const setup of SETUPS) {
      await waitQuiet(monitor)
      // The PgBouncer setups: one PgBouncer in transaction pooling for the whole fleet, logged in as the application role.
      const bouncer: PgBouncer | undefined = setup.endsWith('-pgbouncer')
        ? await startPgBouncer(url.toString(), { poolMode: 'transaction', defaultPoolSize: PGBOUNCER_POOL_SIZE })
        : undefined
      try {
        results.push(await runSetup(setup, bouncer ? bouncer.urlFor(url.toString()) : url.toString(), monitor))
      } finally {
        await bouncer?.stop()
      }
    }
    const rowsOut = results.flatMap((r) =>
      r.reports.map((w, i) => [
        r.setup,
        i + 1,
        `${fmt(pct(w.critical.ok, w.critical.total), 1)}%`,
        `${w.critical.ok}/${w.critical.total}`,
        `${fmt(pct(w.sheddable.ok, w.sheddable.total), 1)}%`,
        fmt((w.critical.ok + w.sheddable.ok) / SECONDS, 1),
        w.errors.connection,
        w.errors.shed,
        w.errors.deadline,
        w.errors.other,
      ]),
    )
    printTable('Per instance', ['setup', 'inst', 'critical ok', 'critical', 'sheddable ok', 'goodput/s', 'conn err', 'shed', 'deadline', 'other'], rowsOut)
    const summary = results.map((r) => {
      const worst = Math.min(...r.reports.map((w) => pct(w.critical.ok, w.critical.total)))
      const critical = r.reports.reduce((s, w) => s + w.critical.ok, 0) / Math.max(1, r.reports.reduce((s, w) => s + w.critical.total, 0))
      const goodput = r.reports.reduce((s, w) => s + w.critical.ok + w.sheddable.ok, 0) / SECONDS
      const connectionErrors = r.reports.reduce((s, w) => s + w.errors.connection, 0)
      return { setup: r.setup, worst, critical: 100 * critical, goodput, connectionErrors, peak: r.peakConnections, samples: r.reports.flatMap((w) => w.samples) }
    })
    printTable(
      'Per setup',
      ['setup', 'critical ok (all)', 'critical ok (worst instance)', 'goodput/s', 'connection errors to callers', 'server connections peak'],
      summary.map((s) => [s.setup, `${fmt(s.critical, 1)}%`, `${fmt(s.worst, 1)}%`, fmt(s.goodput, 1), fmtInt(s.connectionErrors), s.peak]),
    )
    for (const r of results) {
      r.reports.forEach((w, i) => {
        if (Object.keys(w.criticalFailures).length && (!r.setup.startsWith('kysely') || envFlag('BENCH_TRACE'))) console.log(`  ${r.setup} instance ${i + 1}: critical failures ${JSON.stringify(w.criticalFailures)}`)
        if (envFlag('BENCH_TRACE')) console.log(`  ${r.setup} instance ${i + 1}: held each 0.5 s ${w.held.join(' ')}${w.ceilings.length ? `; ceiling ${w.ceilings.join(' ')}; limits read after ${w.limitsAfterMs ?? '-'} ms, fair share ${w.fairShare ?? '-'}` : ''}`)
      })
    }
    for (const r of results) r.reports.forEach((w, i) => w.startTrace?.forEach((line) => console.log(`  ${r.setup} ${i + 1} ${line}`)))
    for (const s of summary) if (s.samples.length) console.log(`  ${s.setup} errors, for example: ${[...new Set(s.samples)].slice(0, 3).join(' | ')}`)
    const checks: Check[] = []
    for (const s of summary.filter((x) => !x.setup.startsWith('kysely'))) {
      // Each governed setup against plain Kysely on the same path (direct, or through PgBouncer).
      const kysely = summary.find((k) => k.setup === (s.setup.endsWith('-pgbouncer') ? 'kysely-pgbouncer' : 'kysely'))
      checks.push(check(`${s.setup}: worst instance critical success`, s.worst, '>=', 99, '%'))
      checks.push(check(`${s.setup}: connection errors reaching callers`, s.connectionErrors, '<=', 0))
      if (kysely) checks.push(check(`${s.setup}: goodput / ${kysely.setup}'s`, s.goodput / kysely.goodput, '>=', 1, 'x'))
    }
    printChecks('Targets', checks)
    console.log(`\n[fleet] done in ${((performance.now() - startedAt) / 1000).toFixed(1)} s; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`)
    return checks.every((c) => c.pass) || !envFlag('BENCH_STRICT') ? 0 : 1
  } finally {
    await monitor.end().catch(() => {})
    await server.destroy()
  }
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error('[fleet] failed:', error)
    process.exit(1)
  },
)
