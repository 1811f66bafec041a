/**
 * `npm run demo`: pg-governor under a real overload, next to plain Kysely.
 *
 *   1. Starts a PostgreSQL (PG_TEST_URL, else testcontainers, else an embedded
 *      PostgreSQL 18) and loads sql/demo-schema.sql into a fresh database.
 *   2. Serves an HTTP API on 127.0.0.1 with node:http and pg-governor's
 *      governedHandler: GET /orders/:id (critical, domain checkout),
 *      GET /report (sheddable, domain report) and GET /metrics (prom-client).
 *   3. Sends it open-loop traffic with fetch: 15 % critical, X-Request-Timeout
 *      on every request, a few clients that abort early. Halfway through, the
 *      database gets slow (demo_settings): the pool cannot keep up any more.
 *      A live view shows the pool, the outcomes per criticality and the zombie
 *      backends (queries still running for a client that has gone).
 *   4. Sends the very same traffic to the same routes written the usual way:
 *      Kysely's PostgresDialect and plain handlers.
 *   5. Prints both side by side, and a line of /metrics; stops everything.
 *
 * DEMO_SECONDS (default 50) is the load of both runs together; the demo takes
 * about ten seconds more. DEMO_RATE (default 60) is the request rate.
 */
import pg from 'pg'
import { DEFAULT_UTILISATION_THRESHOLDS } from '../src/index.js'
import { DEMO_SECONDS, CLIENT_ABORT_SHARE, CRITICAL_SHARE, POOL_MAX, RATE_PER_SECOND, RUN_SECONDS, ROUTES } from './config.js'
import { describeSlowness, setSlowness } from './database.js'
import { bold, dim, heading, ms } from './format.js'
import { startGovernedService, type GovernedService } from './governed-service.js'
import { planLoad } from './load-plan.js'
import { sampleMetrics } from './metrics-sample.js'
import { startPlainService } from './plain-service.js'
import { createDemoDatabase, startPostgres, type DemoDatabase, type PostgresServer } from './postgres-server.js'
import { runLoad, type RunResult } from './run-load.js'
import { printSummary, printTakeaways } from './summary.js'
import { waitForNoDemoQueries } from './zombie-sampler.js'

/** If anything hangs, fail loudly instead of sitting there. */
const WATCHDOG_MS = (DEMO_SECONDS + 90) * 1000
const watchdog = setTimeout(() => {
  console.error(`\ndemo: still running after ${WATCHDOG_MS / 1000} s; giving up`)
  process.exit(2)
}, WATCHDOG_MS)
watchdog.unref()

const t0 = performance.now()
const problems: string[] = []

async function main(): Promise<void> {
  console.log(bold('pg-governor demo: one service, an overload, and the same load against plain Kysely'))
  console.log(dim(`${DEMO_SECONDS} s of load in all (DEMO_SECONDS); about ${Math.round(DEMO_SECONDS + 10)} s with setup and teardown`))

  heading('Starting PostgreSQL')
  let started = performance.now()
  let server: PostgresServer | undefined
  let database: DemoDatabase | undefined
  let governed: GovernedService | undefined
  // Two connections of the demo's own: one changes demo_settings, the other samples pg_stat_activity.
  let clients: { admin: pg.Client; monitor: pg.Client } | undefined
  try {
    server = await startPostgres()
    console.log(`PostgreSQL ${server.version} (${server.source}), ready in ${ms(performance.now() - started)}`)
    started = performance.now()
    database = await createDemoDatabase(server.url)
    console.log(`database ${database.name}: sql/demo-schema.sql loaded in ${ms(performance.now() - started)}`)
    const adminClient = new pg.Client({ connectionString: database.url, application_name: 'pg-governor demo admin' })
    const monitorClient = new pg.Client({ connectionString: database.url, application_name: 'pg-governor demo monitor' })
    clients = { admin: adminClient, monitor: monitorClient }
    await Promise.all([adminClient.connect(), monitorClient.connect()])
    const ctx = { admin: adminClient, monitor: monitorClient, databaseName: database.name }

    const plan = planLoad(RUN_SECONDS)
    heading('The service and the load')
    governed = await startGovernedService(database.url)
    console.log(`HTTP service on ${governed.url} (node:http + governedHandler, GovernedPostgresDialect, pool max ${POOL_MAX})`)
    console.log(`  GET /orders/:id  criticality critical,  domain ${ROUTES.critical.domain}`)
    console.log(`  GET /report      criticality sheddable, domain ${ROUTES.sheddable.domain}`)
    console.log(`  GET /metrics     prom-client Registry via registerPrometheusMetrics(dialect, { registry, poolName: 'demo' })`)
    console.log(
      `  admission: default thresholds, sheddable refused from utilisation ${DEFAULT_UTILISATION_THRESHOLDS.sheddable}, ` +
        'critical only when its deadline cannot be met',
    )
    console.log(
      `Load per run: ${plan.requests.length} requests in ${RUN_SECONDS} s, open loop at ~${RATE_PER_SECOND}/s, ` +
        `${Math.round(CRITICAL_SHARE * 100)} % critical, ${Math.round(CLIENT_ABORT_SHARE * 100)} % aborted early by their client`,
    )
    console.log(`  X-Request-Timeout ${ROUTES.critical.timeoutMs} ms on /orders, ${ROUTES.sheddable.timeoutMs} ms on /report; clients give up a little after it`)
    console.log(`  normal phase: ${describeSlowness('normal')}`)
    console.log(`  slow phase from ${RUN_SECONDS / 2} s: ${describeSlowness('slow')}`)

    heading('Run 1 of 2: pg-governor')
    const governedRun = await runLoad(governed, { ...ctx, plan, title: 'run 1/2 · pg-governor · GovernedPostgresDialect + governedHandler' })
    const leftGoverned = await waitForNoDemoQueries(monitorClient, database.name, 5_000)
    if (leftGoverned > 0) problems.push(`${leftGoverned} governed queries still running 5 s after the load ended`)

    heading('Run 2 of 2: the same load, plain Kysely')
    const plain = await startPlainService(database.url)
    console.log(`HTTP service on ${plain.url} (node:http, Kysely PostgresDialect, pool max ${POOL_MAX}, no deadline, no signal)`)
    let plainRun: RunResult
    try {
      plainRun = await runLoad(plain, { ...ctx, plan, title: 'run 2/2 · plain Kysely · PostgresDialect + plain handlers' })
      if (plainRun.queuedAtEnd > 0) {
        // Nobody waits for these any more; make the database fast again so they drain quickly.
        started = performance.now()
        await setSlowness(adminClient, 'normal')
        const drained = await plain.drained(20_000)
        console.log(
          dim(
            `When the last client was done, ${plainRun.queuedAtEnd} requests were still queued in pg-pool for nobody; ` +
              `${drained ? `with the database fast again they drained in ${ms(performance.now() - started)}` : 'they did not drain in 20 s'}.`,
          ),
        )
      }
    } finally {
      await plain.close()
    }

    heading('Side by side: the same load')
    printSummary([governedRun, plainRun])
    console.log()
    printTakeaways(governedRun, plainRun)
    checkRuns(governedRun, plainRun)

    heading('/metrics')
    const metrics = await sampleMetrics(governed.metricsUrl)
    console.log(`GET ${governed.metricsUrl} -> ${metrics.status} (${metrics.contentType}), ${metrics.series} series; for example:`)
    console.log(`  ${metrics.line ?? '(no pg_governor series found)'}`)
    if (metrics.status !== 200 || metrics.line === undefined) problems.push(`/metrics answered ${metrics.status} without pg_governor series`)
  } finally {
    started = performance.now()
    await governed?.close().catch((error: unknown) => console.error('demo: closing the governed service failed:', error))
    if (clients) await Promise.all([clients.admin.end(), clients.monitor.end()]).catch(() => {})
    await database?.drop().catch((error: unknown) => console.error('demo: dropping the database failed:', error))
    await server?.stop()
    console.log(`\nService and PostgreSQL stopped in ${ms(performance.now() - started)}; the demo took ${ms(performance.now() - t0)}.`)
  }
}

/** Hard failures only: what the numbers look like depends on the machine, but these must hold anywhere. */
function checkRuns(governed: RunResult, plain: RunResult): void {
  // The normal phase is well under capacity: both setups must serve it.
  for (const run of [governed, plain]) {
    for (const criticality of ['critical', 'sheddable'] as const) {
      const normal = run.requests.filter((r) => r.planned.criticality === criticality && r.planned.phase === 'normal')
      if (normal.length > 0 && !normal.some((r) => r.outcome === 'ok')) {
        problems.push(`${run.service}: none of the ${normal.length} ${criticality} requests of the normal phase succeeded`)
      }
    }
  }
  const errors = governed.requests.filter((r) => r.outcome === 'other')
  if (errors.length > 0) {
    const examples = [...new Set(errors.map((r) => r.error ?? `HTTP ${r.status}`))].slice(0, 3).join('; ')
    problems.push(`${governed.service}: ${errors.length} requests failed unexpectedly (${examples})`)
  }
}

main()
  .then(() => {
    if (problems.length > 0) {
      for (const problem of problems) console.error(`demo: ${problem}`)
      process.exitCode = 1
    }
  })
  .catch((error: unknown) => {
    console.error('demo failed:', error)
    process.exitCode = 1
  })
  .finally(() => {
    // Everything is closed by now; if some handle still keeps the process alive, do not wait for it.
    setTimeout(() => process.exit(), 2_000).unref()
  })
