/**
 * Issue 13's cascading-failure scenario: an overload (not an outage) with
 * clients that retry, plain Kysely + pg-pool and pg-governor side by side in
 * one run, on one server.
 *
 * Per setup: an open loop of BENCH_OVERLOAD_RATE (400) requests/s for
 * BENCH_OVERLOAD_MS (4000) into a pool of 4 connections whose statement
 * takes QUERY_MS (20 ms): capacity is ~200/s, so the offered load is ~2x.
 * Requests are 10% critical_plus, 30% critical, 30% sheddable_plus, 30%
 * sheddable. Each request is an HTTP-like client that retries a 503 or a 504
 * up to 3 times, as SDKs do: after the Retry-After it was given (whole
 * seconds, at least 1, as the library's HTTP adapters send it), else after
 * 100 × 2^(n-1) ms; every attempt has a fresh BUDGET_MS (300) timeout. A
 * LOAD_SHED is a 503; a deadline or cancel (pg-governor's errors, Kysely's
 * abort with 'cancel query') a 504; anything else a 500, not retried.
 *
 * Measured per setup: offered attempts (every client attempt), admitted
 * attempts (not refused before anything was sent), attempts reaching the
 * server (statements that started there: a sequence's nextval in the
 * statement, counted at the server), success per criticality, p99 of
 * successes (from the first attempt), client attempts per success, goodput.
 * Target (pg-governor): attempts reaching the server <= 1.1x the original
 * requests.
 *
 * Knobs: BENCH_OVERLOAD_RATE (400), BENCH_OVERLOAD_MS (4000), BENCH_LIB (build|src), PG_BENCH_URL.
 *
 *   npx tsx bench/retries-overload.ts      (npm run bench:retries-overload)
 */
import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import type { Criticality } from '../src/index.js'
import { envInt } from './support/env.js'
import { check, fmt, printChecks, printTable } from './support/format.js'
import { loadGovernor, type Governor } from './support/lib.js'
import { startBenchServer } from './support/server.js'
import { percentileSorted, sortedCopy } from './support/stats.js'

const RATE = envInt('BENCH_OVERLOAD_RATE', 400)
const RUN_MS = envInt('BENCH_OVERLOAD_MS', 4_000)
const QUERY_MS = 20
const BUDGET_MS = 300
const CLIENT_RETRIES = 3
const POOL_MAX = 4
const MIX: readonly Criticality[] = ['critical_plus', 'critical', 'critical', 'critical', 'sheddable_plus', 'sheddable_plus', 'sheddable_plus', 'sheddable', 'sheddable', 'sheddable']
const LEVELS: readonly Criticality[] = ['critical_plus', 'critical', 'sheddable_plus', 'sheddable']

/** What an HTTP client would see of one attempt. */
interface Answer {
  readonly status: 200 | 503 | 504 | 500
  /** The Retry-After header, in seconds, when there is one. */
  readonly retryAfterS?: number | undefined
}

interface Setup {
  readonly label: string
  attempt(criticality: Criticality): Promise<Answer>
  end(): Promise<void>
}

interface Request {
  readonly criticality: Criticality
  readonly sentAt: number
  ok: boolean
  attempts: number
  shed: number
  settledAt: number
}

const statement = sql`select nextval('retries_overload_hits') as n, pg_sleep(${QUERY_MS / 1_000})`

function governedSetup(governor: Governor, url: string): Setup {
  const pool = new pg.Pool({ connectionString: url, max: POOL_MAX })
  const db = new Kysely<any>({ dialect: new governor.GovernedPostgresDialect({ pool }) })
  return {
    label: 'pg-governor',
    attempt: (criticality) =>
      governor.withQueryContext({ timeoutMs: BUDGET_MS, criticality }, () => statement.execute(db)).then(
        (): Answer => ({ status: 200 }),
        (error: unknown): Answer => {
          const code = (error as { code?: string }).code
          if (code === 'LOAD_SHED') return { status: 503, retryAfterS: Math.max(1, Math.ceil((error as { retryAfterMs: number }).retryAfterMs / 1_000)) }
          return { status: code === 'DEADLINE_EXCEEDED' || code === 'QUERY_CANCELED' ? 504 : 500 }
        },
      ),
    end: () => db.destroy(),
  }
}

function kyselySetup(url: string): Setup {
  const pool = new pg.Pool({ connectionString: url, max: POOL_MAX })
  pool.on('error', () => {})
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) })
  return {
    label: 'Kysely PostgresDialect',
    attempt: () =>
      statement.execute(db, { signal: AbortSignal.timeout(BUDGET_MS), inflightQueryAbortStrategy: 'cancel query' } as never).then(
        (): Answer => ({ status: 200 }),
        (error: unknown): Answer => {
          const timedOut = (error as Error).name === 'TimeoutError' || (error as { code?: string }).code === '57014'
          return { status: timedOut ? 504 : 500 }
        },
      ),
    end: () => db.destroy(),
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))

/** One client request: up to 1 + CLIENT_RETRIES attempts, retrying 503 and 504 only. */
async function request(setup: Setup, r: Request): Promise<void> {
  for (;;) {
    r.attempts++
    const answer = await setup.attempt(r.criticality)
    if (answer.status === 200) {
      r.ok = true
      break
    }
    if (answer.status === 503) r.shed++
    if ((answer.status !== 503 && answer.status !== 504) || r.attempts > CLIENT_RETRIES) break
    await sleep(answer.retryAfterS !== undefined ? answer.retryAfterS * 1_000 : 100 * 2 ** (r.attempts - 1))
  }
  r.settledAt = performance.now()
}

async function serverHits(admin: pg.Client): Promise<number> {
  const { rows } = await admin.query<{ n: string }>(`select last_value as n from retries_overload_hits`)
  return Number(rows[0]?.n ?? 0)
}

async function measure(setup: Setup, admin: pg.Client): Promise<{ requests: Request[]; atServer: number; spanS: number }> {
  for (let i = 0; i < 20; i++) await setup.attempt('critical_plus')
  const before = await serverHits(admin)
  const t0 = performance.now()
  const requests: Request[] = []
  const running: Promise<void>[] = []
  for (let i = 0; i < (RUN_MS * RATE) / 1_000; i++) {
    const wait = t0 + (i * 1_000) / RATE - performance.now()
    if (wait > 0) await sleep(wait)
    const r: Request = { criticality: MIX[i % MIX.length] as Criticality, sentAt: performance.now(), ok: false, attempts: 0, shed: 0, settledAt: 0 }
    requests.push(r)
    running.push(request(setup, r))
  }
  await Promise.all(running)
  const spanS = (Math.max(...requests.map((r) => r.settledAt)) - t0) / 1_000
  // Kysely's abandoned waiters may still get a connection and run: let them land before counting.
  await sleep(500)
  return { requests, atServer: (await serverHits(admin)) - before, spanS }
}

// Kysely 0.29 logs one line per abort whose 'cancel query' handler fails in the background: counted, not printed.
const kyselyAbortLogs = new Map<string, number>()
const consoleError = console.error
console.error = (...args: unknown[]): void => {
  const text = args.map(String).join(' ')
  if (!text.startsWith('`inflightQueryAbortHandler` failed')) return consoleError(...args)
  kyselyAbortLogs.set(text, (kyselyAbortLogs.get(text) ?? 0) + 1)
}

const server = await startBenchServer()
const { governor, label } = await loadGovernor()
const admin = new pg.Client({ connectionString: server.url })
await admin.connect()
await admin.query('create sequence if not exists retries_overload_hits')
console.log(
  `PostgreSQL ${server.version} (${server.source}); ${label}; ${RATE} req/s for ${RUN_MS} ms into ${POOL_MAX} connections × ${QUERY_MS} ms` +
    ` (capacity ~${(POOL_MAX * 1_000) / QUERY_MS}/s); ${BUDGET_MS} ms per attempt, ${CLIENT_RETRIES} client retries of 503/504`,
)
const rows: (string | number)[][] = []
const perLevel: (string | number)[][] = []
const ratios = new Map<string, number>()
for (const make of [(url: string) => kyselySetup(url), (url: string) => governedSetup(governor, url)]) {
  const setup = make(server.url)
  try {
    const { requests, atServer, spanS } = await measure(setup, admin)
    const offered = requests.reduce((sum, r) => sum + r.attempts, 0)
    const admitted = offered - requests.reduce((sum, r) => sum + r.shed, 0)
    const ok = requests.filter((r) => r.ok)
    const latencies = sortedCopy(ok.map((r) => r.settledAt - r.sentAt))
    ratios.set(setup.label, atServer / requests.length)
    rows.push([
      setup.label,
      requests.length,
      offered,
      admitted,
      atServer,
      `${fmt(atServer / requests.length)}x`,
      `${fmt((100 * ok.length) / requests.length, 1)}%`,
      `${fmt(percentileSorted(latencies, 0.99), 0)} ms`,
      fmt(offered / Math.max(1, ok.length)),
      fmt(ok.length / spanS, 0),
    ])
    perLevel.push([
      setup.label,
      ...LEVELS.map((level) => {
        const of = requests.filter((r) => r.criticality === level)
        return `${fmt((100 * of.filter((r) => r.ok).length) / Math.max(1, of.length), 1)}%`
      }),
    ])
  } finally {
    await setup.end()
  }
}
printTable(
  'Overload (~2x capacity) with clients that retry 503/504 up to 3 times',
  ['setup', 'requests', 'offered attempts', 'admitted attempts', 'at server', 'at server/request', 'succeeded', 'p99 ok', 'attempts/success', 'successes/s (until the last settled)'],
  rows,
)
printTable('Success by criticality', ['setup', ...LEVELS], perLevel)
for (const [text, count] of kyselyAbortLogs) console.log(`Kysely logged ${count} × ${text}`)
const governed = ratios.get('pg-governor')
if (governed !== undefined) printChecks('Target (pg-governor)', [check('attempts reaching the server per original request', governed, '<=', 1.1, 'x')])
await admin.end()
await server.stop()
