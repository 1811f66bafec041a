/**
 * Issue 13's restart window with clients that retry: plain Kysely + pg-pool
 * and pg-governor side by side in one run, each behind its own
 * test/support/fault-proxy.ts on 127.0.0.1 in front of the bench server.
 *
 * Per setup: an open loop of BENCH_RETRY_RATE (150) requests/s for 3 s; at
 * 0.8 s every connection is reset and new ones are refused for
 * BENCH_OUTAGE_MS (1000): what a server restart does to the pool. Each
 * request is a client with a 3 s budget that retries any failure up to 3
 * times (as browsers and SDKs retry a 503/504), 50 ms apart or after the
 * error's retryAfterMs, each attempt with the budget left as its deadline.
 * pg-governor runs with `retry: { waitForRecovery: true }` (connect retries
 * on its default budget); Kysely with nothing but the client's retries.
 *
 * Measured: client attempts per request (the amplification the application
 * causes), connects reaching the server's address (counted at the proxy),
 * success rate, p99 latency of successes, and the share of requests sent
 * during the outage (whose 3 s budget outlasts it) that failed.
 * Targets (pg-governor): client attempts <= 1.1x requests; outage requests
 * failed <= 2%.
 *
 * Then a real restart (BENCH_RESTART=0 skips it): an embedded PostgreSQL of
 * the bench's own, stopped for 1 s and started again under 200 reads/s, each
 * a single attempt with a BENCH_RESTART_BUDGET_MS (6000) budget (test/support/restart-window.ts, the
 * choreography of the restart tests). Measured: the share of requests sent
 * while the server was down, whose budget outlasts the outage by 500 ms, that
 * failed. Target (pg-governor, `waitForRecovery`): <= 2%.
 *
 * Knobs: BENCH_RETRY_RATE (150), BENCH_OUTAGE_MS (1000), BENCH_RESTART (1), BENCH_RESTART_BUDGET_MS (6000), BENCH_LIB (build|src), PG_BENCH_URL.
 *
 *   npx tsx bench/retries.ts      (npm run bench:retries)
 */
import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import { startFaultProxy, type FaultProxy } from '../test/support/fault-proxy.js'
import { requestsThroughRestart } from '../test/support/restart-window.js'
import { startEmbeddedServer } from '../test/support/test-server.js'
import { envInt } from './support/env.js'
import { check, fmt, printChecks, printTable } from './support/format.js'
import { loadGovernor, type Governor } from './support/lib.js'
import { startBenchServer } from './support/server.js'
import { percentileSorted, sortedCopy } from './support/stats.js'

const RATE = envInt('BENCH_RETRY_RATE', 150)
const OUTAGE_MS = envInt('BENCH_OUTAGE_MS', 1_000)
const RUN_MS = 3_000
const OUTAGE_AT_MS = 800
const BUDGET_MS = 3_000
const CLIENT_RETRIES = 3
const POOL_MAX = 4
/**
 * Each request's budget in the real restart: a "1 s restart" takes 1.3-3.4 s
 * from stop to ready on our loaded 2-core machines (PostgreSQL's own stop and
 * start), and 3 s then leaves most requests sent during it too little to be
 * served from the backlog (admission sheds them as infeasible, reason deadline).
 */
const RESTART_BUDGET_MS = envInt('BENCH_RESTART_BUDGET_MS', 6_000)

// Plain pg emits 'error' on a checked-out client whose socket is reset: uncaught, it would end the process. Counted, per setup.
let uncaught = 0
process.on('uncaughtException', () => uncaught++)
process.on('unhandledRejection', () => uncaught++)

interface Setup {
  readonly label: string
  readonly query: (deadlineMs: number) => Promise<unknown>
  readonly end: () => Promise<void>
}

interface Request {
  readonly sentAt: number
  ok: boolean
  attempts: number
  settledAt: number
}

function governedSetup(governor: Governor, url: string): Setup {
  const pool = new pg.Pool({ connectionString: url, max: POOL_MAX })
  const db = new Kysely<any>({ dialect: new governor.GovernedPostgresDialect({ pool, retry: { waitForRecovery: true } }) })
  return {
    label: 'pg-governor',
    query: (deadlineMs) => governor.withQueryContext({ timeoutMs: deadlineMs }, () => sql`select 1`.execute(db)),
    end: () => db.destroy(),
  }
}

function kyselySetup(url: string): Setup {
  const pool = new pg.Pool({ connectionString: url, max: POOL_MAX })
  pool.on('error', () => {})
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) })
  return {
    label: 'Kysely PostgresDialect',
    query: (deadlineMs) => sql`select 1`.execute(db, { signal: AbortSignal.timeout(deadlineMs), inflightQueryAbortStrategy: 'cancel query' } as never),
    end: () => db.destroy(),
  }
}

/** Error kinds of the current setup, for the lines under the table. */
let errorKinds = new Map<string, number>()

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

function kindOf(error: unknown): string {
  const reason = (error as { reason?: string }).reason
  return `${(error as Error).constructor?.name} ${(error as { code?: string }).code ?? ''}${reason ? ` (${reason})` : ''} ${String((error as Error).message).slice(0, 70)}`
}

/** One client request: up to 1 + CLIENT_RETRIES attempts within BUDGET_MS. */
async function request(setup: Setup, request: Request): Promise<void> {
  const deadline = request.sentAt + BUDGET_MS
  for (;;) {
    request.attempts++
    try {
      await setup.query(Math.max(1, Math.floor(deadline - performance.now())))
      request.ok = true
      break
    } catch (error) {
      const kind = kindOf(error)
      errorKinds.set(kind, (errorKinds.get(kind) ?? 0) + 1)
      const waitMs = Math.max(50, (error as { retryAfterMs?: number }).retryAfterMs ?? 0)
      if (request.attempts > CLIENT_RETRIES || performance.now() + waitMs >= deadline) break
      await sleep(waitMs)
    }
  }
  request.settledAt = performance.now()
}

async function measure(setup: Setup, proxy: FaultProxy): Promise<{ requests: Request[]; connects: number; outageStart: number; outageEnd: number }> {
  for (let i = 0; i < 20; i++) await setup.query(1_000)
  const connectsBefore = proxy.accepted
  const t0 = performance.now()
  const outageStart = t0 + OUTAGE_AT_MS
  const outageEnd = outageStart + OUTAGE_MS
  const outage = (async () => {
    await sleep(OUTAGE_AT_MS)
    proxy.refuseFor(OUTAGE_MS)
    proxy.reset()
  })()
  const requests: Request[] = []
  const running: Promise<void>[] = []
  for (let i = 0; i < (RUN_MS * RATE) / 1_000; i++) {
    const wait = t0 + (i * 1_000) / RATE - performance.now()
    if (wait > 0) await sleep(wait)
    const r: Request = { sentAt: performance.now(), ok: false, attempts: 0, settledAt: 0 }
    requests.push(r)
    running.push(request(setup, r))
  }
  await outage
  await Promise.all(running)
  return { requests, connects: proxy.accepted - connectsBefore, outageStart, outageEnd }
}

const server = await startBenchServer()
const { governor, label } = await loadGovernor()
console.log(`PostgreSQL ${server.version} (${server.source}); ${label}; ${RATE} req/s for ${RUN_MS} ms, outage ${OUTAGE_MS} ms at ${OUTAGE_AT_MS} ms, budget ${BUDGET_MS} ms, ${CLIENT_RETRIES} client retries`)
const rows: (string | number)[][] = []
const figures = new Map<string, { attemptsRatio: number; outageFailed: number; connects: number }>()
for (const make of [(url: string) => kyselySetup(url), (url: string) => governedSetup(governor, url)]) {
  const proxy = await startFaultProxy(server.url)
  const setup = make(proxy.url)
  try {
    errorKinds = new Map()
    const uncaughtBefore = uncaught
    const { requests, connects, outageStart, outageEnd } = await measure(setup, proxy)
    for (const [kind, count] of [...errorKinds].sort((a, b) => b[1] - a[1]).slice(0, 4)) console.log(`  ${setup.label}: ${count} × ${kind}`)
    const attempts = requests.reduce((sum, r) => sum + r.attempts, 0)
    const ok = requests.filter((r) => r.ok)
    const latencies = sortedCopy(ok.map((r) => r.settledAt - r.sentAt))
    const inOutage = requests.filter((r) => r.sentAt >= outageStart && r.sentAt < outageEnd)
    const outageFailed = inOutage.filter((r) => !r.ok).length / Math.max(1, inOutage.length)
    figures.set(setup.label, { attemptsRatio: attempts / requests.length, outageFailed, connects })
    rows.push([
      setup.label,
      requests.length,
      attempts,
      `${fmt(attempts / requests.length)}x`,
      connects,
      `${fmt((100 * ok.length) / requests.length, 1)}%`,
      `${fmt(percentileSorted(latencies, 0.99), 0)} ms`,
      inOutage.length,
      `${fmt(100 * outageFailed, 1)}%`,
      uncaught - uncaughtBefore,
    ])
  } finally {
    await setup.end()
    await proxy.close()
  }
}
printTable('Restart window with retrying clients', ['setup', 'requests', 'client attempts', 'attempts/request', 'connects at server', 'succeeded', 'p99 ok', 'sent in outage', 'outage failed', 'uncaught errors'], rows)
const governed = figures.get('pg-governor')
const kysely = figures.get('Kysely PostgresDialect')
if (governed && kysely) {
  console.log(
    `\nratios (Kysely / pg-governor): client attempts per request ${fmt(kysely.attemptsRatio / governed.attemptsRatio)}x,` +
      ` connects at the server ${fmt(kysely.connects / Math.max(1, governed.connects))}x`,
  )
  printChecks('Targets (pg-governor)', [
    check('client attempts per request', governed.attemptsRatio, '<=', 1.1, 'x'),
    check('requests sent in the outage that failed', 100 * governed.outageFailed, '<=', 2, '%'),
  ])
}
await server.stop()

/** The real restart: requests sent while the server was down, with budget to spare, that failed anyway. */
async function restartWindow(): Promise<void> {
  const own = await startEmbeddedServer()
  const restartRows: (string | number)[][] = []
  let governedShare = NaN
  try {
    for (const make of [(url: string) => kyselySetup(url), (url: string) => governedSetup(governor, url)]) {
      const setup = make(own.url)
      try {
        for (let i = 0; i < 20; i++) await setup.query(1_000)
        const uncaughtBefore = uncaught
        const plan = { ratePerS: 200, upBeforeMs: 500, downMs: 1_000, upAfterMs: 1_500 }
        errorKinds = new Map()
        const { outcomes, stopping, ready } = await requestsThroughRestart(own, plan, (sentAt) =>
          setup.query(RESTART_BUDGET_MS).then(
            () => ({ sentAt, ok: true, kind: '' }),
            (error: unknown) => ({ sentAt, ok: false, kind: kindOf(error) }),
          ),
        )
        const outlasting = outcomes.filter((o) => o.sentAt >= stopping && o.sentAt < ready && o.sentAt + RESTART_BUDGET_MS > ready + 500)
        const failed = outlasting.filter((o) => !o.ok).length / Math.max(1, outlasting.length)
        const kinds = new Map<string, number>()
        for (const o of outlasting) if (!o.ok) kinds.set(o.kind, (kinds.get(o.kind) ?? 0) + 1)
        for (const [kind, count] of [...kinds].sort((a, b) => b[1] - a[1]).slice(0, 3)) console.log(`  ${setup.label}, restart: ${count} × ${kind}`)
        if (setup.label === 'pg-governor') governedShare = failed
        restartRows.push([
          setup.label,
          `${fmt(ready - stopping, 0)} ms`,
          outcomes.length,
          `${fmt((100 * outcomes.filter((o) => o.ok).length) / outcomes.length, 1)}%`,
          outlasting.length,
          `${fmt(100 * failed, 1)}%`,
          uncaught - uncaughtBefore,
        ])
      } finally {
        await setup.end()
      }
    }
  } finally {
    await own.destroy()
  }
  printTable(`A real 1 s restart (stop, 1 s, start) under 200 reads/s, one attempt each with a ${RESTART_BUDGET_MS} ms budget`, ['setup', 'outage (stop to ready)', 'requests', 'succeeded', 'sent in outage, budget outlasts it', 'of those failed', 'uncaught errors'], restartRows)
  printChecks('Target (pg-governor)', [check('requests whose budget outlasts a 1 s restart that failed', 100 * governedShare, '<=', 2, '%')])
}

if (process.env['BENCH_RESTART'] !== '0') await restartWindow()
