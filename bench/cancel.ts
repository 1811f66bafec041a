/**
 * Claims about cancellation and deadlines, side by side with Kysely 0.29's own
 * PostgresDialect + `execute({ signal, inflightQueryAbortStrategy: 'cancel query' })`.
 *
 * 1. Abort latency. Each trial runs `select pg_sleep(10) /* <unique tag> *\/`,
 *    waits until pg_stat_activity shows it 'active' and ~50 ms have passed,
 *    aborts, and measures
 *      - abort -> promise rejected: local monotonic clock, from just before
 *        `controller.abort()` to the rejection handler;
 *      - abort -> backend idle: on the SERVER's clock. Before each trial an
 *        NTP-style exchange on an idle monitor connection estimates
 *        offset = server clock_timestamp() - local wall clock (the local wall
 *        clock is performance.timeOrigin + performance.now(), sub-ms), keeping
 *        the sample with the shortest round trip (its half round trip is the
 *        uncertainty, printed). The abort instant on the server clock is
 *        local abort instant + offset. After the abort the monitor polls
 *        pg_stat_activity for the tagged query until state = 'idle' and takes
 *        its `state_change` (set by the backend itself when it went idle), so
 *        the poll rate does not affect the figure (polling starts 20 ms after
 *        the abort, so as not to compete for CPU with the cancel measured):
 *        idle latency = state_change - server-clock abort instant.
 *    Setups, interleaved trial by trial (order rotated):
 *      - governed: GovernedPostgresDialect, abort via withQueryContext({ signal })
 *      - kysely:   PostgresDialect, execute(db, { signal, inflightQueryAbortStrategy: 'cancel query' })
 *      - governed via execute({ signal }) (info only, every 4th trial): Kysely's
 *        own abort API on the governed dialect.
 *    Targets (governed): p50 <= 2 ms and p99 <= 10 ms for both latencies, and
 *    backend idle >= 3x faster than kysely at p50 and at p99.
 * 2. statement_timeout SET round trips ('statementTimeout' events):
 *      (a) steady traffic, every query in its own withQueryContext({ timeoutMs: 3000 }),
 *          concurrency 16; counted after a warm-up. Target <= 10 per 1000 queries.
 *      (b) shrinking deadline: requests of withQueryContext({ timeoutMs: 2000 }) running
 *          sequential `select pg_sleep(0.02)` until the budget is nearly spent, so the
 *          remaining time crosses ladder steps; one request at a time, then 4 at once.
 *          No target: printed with the number of ladder steps a request spans.
 * 3. `select 1` throughput at concurrency 16: governed with a per-request
 *    withQueryContext({ timeoutMs: 5000 }) vs PostgresDialect without deadline,
 *    alternating rounds, each setup in a child process of its own with its own
 *    pg.Pool (max 16). Target >= 0.95.
 *
 * The library is measured as compiled by tsc (BENCH_LIB=build, default) or
 * from src/ through tsx (BENCH_LIB=src); see bench/support/lib.ts.
 *
 * Knobs: BENCH_ABORTS (200), BENCH_ABORT_WARMUP (10), BENCH_ABORT_AFTER_MS (50),
 * BENCH_IDLE_POLL_DELAY_MS (20), BENCH_STEADY_QUERIES (5000), BENCH_SHRINK_REQUESTS (2 per worker),
 * BENCH_ROUNDS (6), BENCH_ROUND_MS (1500), BENCH_WARMUP_MS (1000),
 * BENCH_POOL_MAX (16), BENCH_LIB, PG_BENCH_URL, BENCH_STRICT, BENCH_MAX_SECONDS.
 *
 *   npx tsx bench/cancel.ts      (npm run bench:cancel)
 */
import { randomBytes } from 'node:crypto'
import os from 'node:os'
import { sql, type Kysely } from 'kysely'
import pg from 'pg'
import type { CancelEvent } from '../src/index.js'
import { governedDb, plainDb, select1, select1WithDeadline } from './support/dialects.js'
import { envInt, knobs } from './support/env.js'
import { check, fmt, fmtInt, printChecks, printTable, type Check } from './support/format.js'
import { isolatedSetup } from './support/isolated.js'
import { alternatingRounds, MEDIAN_HEADERS, medianCells, pairedRatio, type SetupRounds } from './support/load.js'
import { governorLabel, type Governor } from './support/lib.js'
import { machine, writeResults } from './support/results.js'
import { runBench, sleep } from './support/run.js'
import { estimateClockOffset, wallNow } from './support/server-clock.js'
import { median, summarize, type Summary } from './support/stats.js'

const ABORTS = envInt('BENCH_ABORTS', 200)
const ABORT_WARMUP = envInt('BENCH_ABORT_WARMUP', 10, 0)
const ABORT_AFTER_MS = envInt('BENCH_ABORT_AFTER_MS', 50, 0)
const IDLE_POLL_DELAY_MS = envInt('BENCH_IDLE_POLL_DELAY_MS', 20, 0)
const STEADY_QUERIES = envInt('BENCH_STEADY_QUERIES', 5000)
const SHRINK_REQUESTS = envInt('BENCH_SHRINK_REQUESTS', 2)
const ROUNDS = envInt('BENCH_ROUNDS', 6)
const ROUND_MS = envInt('BENCH_ROUND_MS', 1500)
const WARMUP_MS = envInt('BENCH_WARMUP_MS', 1000)
const POOL_MAX = envInt('BENCH_POOL_MAX', 16)
const EXTRA_EVERY = 4

const NONCE = randomBytes(3).toString('hex')

// ---------------------------------------------------------------------------
// 1. abort latency

interface AbortSetup {
  readonly key: string
  readonly label: string
  readonly run: (query: string, signal: AbortSignal) => Promise<unknown>
  readonly every: number
  /** The governed dialect's 'cancel' events, to pair each trial with its cancel's round trip. */
  readonly cancels?: CancelEvent[]
}

interface Trial {
  readonly setup: string
  readonly rejectMs: number
  readonly idleMs: number
  readonly clockUncertaintyMs: number
  readonly error: string
  readonly ok: boolean
  /** Governed setups: how long pg_cancel_backend on the control connection took (from the 'cancel' event). */
  readonly cancelRoundTripMs?: number
  readonly note?: string
}

interface ActivityRow {
  state: string | null
  state_change_ms: number | null
}

async function findActivity(monitor: pg.Client, tag: string): Promise<ActivityRow | undefined> {
  const { rows } = await monitor.query<ActivityRow>({
    name: 'bench_find_activity',
    text: `select state, (extract(epoch from state_change) * 1000)::float8 as state_change_ms
             from pg_stat_activity where pid <> pg_backend_pid() and strpos(query, $1) > 0`,
    values: [tag],
  })
  return rows[0]
}

async function waitForState(monitor: pg.Client, tag: string, state: string, timeoutMs: number, pollMs: number): Promise<ActivityRow | undefined> {
  const until = performance.now() + timeoutMs
  for (;;) {
    const row = await findActivity(monitor, tag)
    if (row?.state === state) return row
    if (performance.now() > until) return undefined
    await sleep(pollMs)
  }
}

function describeError(error: unknown): string {
  if (error instanceof Error) return `${error.constructor.name}${(error as { code?: unknown }).code ? `(${String((error as { code?: unknown }).code)})` : ''}`
  return typeof error
}

async function abortTrial(monitor: pg.Client, setup: AbortSetup, index: number): Promise<Trial> {
  const tag = `bench-cancel-${setup.key}-${NONCE}-${index}`
  const query = `select pg_sleep(10) /* ${tag} */`
  const clock = await estimateClockOffset(monitor)
  const cancelsBefore = setup.cancels?.length ?? 0
  const controller = new AbortController()
  const startedAt = performance.now()
  let rejectedAt = NaN
  let error = 'resolved'
  const settled = setup.run(query, controller.signal).then(
    () => {},
    (e: unknown) => {
      rejectedAt = performance.now()
      error = describeError(e)
    },
  )
  const active = await waitForState(monitor, tag, 'active', 5000, 5)
  const wait = startedAt + ABORT_AFTER_MS - performance.now()
  if (wait > 0) await sleep(wait)
  const abortAt = performance.now()
  const abortWall = performance.timeOrigin + abortAt
  controller.abort(new Error('bench abort'))
  await settled
  // Start polling only after a pause, so that the monitor's own queries do not compete with the cancel
  // being measured (the figure comes from the server's state_change, not from when the poll saw it).
  await sleep(IDLE_POLL_DELAY_MS)
  const idle = await waitForState(monitor, tag, 'idle', 15_000, 10)
  const cancel = setup.cancels?.[cancelsBefore]
  const idleMs = idle?.state_change_ms != null ? idle.state_change_ms - (abortWall + clock.offsetMs) : NaN
  const note = !active ? 'never seen active before the abort' : !idle ? 'backend not idle within 15 s' : undefined
  return {
    setup: setup.key,
    rejectMs: rejectedAt - abortAt,
    idleMs,
    clockUncertaintyMs: clock.uncertaintyMs,
    error,
    ok: note === undefined && Number.isFinite(rejectedAt),
    ...(cancel?.outcome ? { cancelRoundTripMs: cancel.outcome.durationMs } : {}),
    ...(note ? { note } : {}),
  }
}

// ---------------------------------------------------------------------------
// 2. statement_timeout SETs

async function countedLoop(total: number, concurrency: number, op: () => Promise<unknown>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < total) {
        next++
        await op()
      }
    }),
  )
}

interface ShrinkResult {
  readonly workers: number
  readonly requests: number
  readonly queries: number
  readonly sets: number
  readonly perThousand: number
  readonly perRequest: number
  readonly values: Record<string, number>
  readonly errors: number
}

async function shrinkingDeadlines(governor: Governor, db: Kysely<any>, counter: { sets: number; values: Map<string, number> }, workers: number, requestsPerWorker: number): Promise<ShrinkResult> {
  const { withQueryContext, currentQueryContext } = governor
  const sleepSql = sql`select pg_sleep(0.02)`
  let queries = 0
  let errors = 0
  const setsBefore = counter.sets
  counter.values.clear()
  const request = (): Promise<void> =>
    withQueryContext({ timeoutMs: 2000 }, async () => {
      const context = currentQueryContext()
      if (!context) throw new Error('no query context')
      // Stop while a 20 ms statement still fits with room to spare: the point is the SETs, not the deadline error.
      while (context.deadline - performance.now() > 60) {
        try {
          await sleepSql.execute(db)
          queries++
        } catch {
          errors++
        }
      }
    })
  await Promise.all(
    Array.from({ length: workers }, async () => {
      for (let i = 0; i < requestsPerWorker; i++) await request()
    }),
  )
  const sets = counter.sets - setsBefore
  const requests = workers * requestsPerWorker
  return {
    workers,
    requests,
    queries,
    sets,
    perThousand: (sets / queries) * 1000,
    perRequest: sets / requests,
    values: Object.fromEntries(counter.values),
    errors,
  }
}

// ---------------------------------------------------------------------------

runBench('cancel', async (server, governor) => {
  const { withQueryContext, DEFAULT_STATEMENT_TIMEOUT_LADDER_MS } = governor
  const checks: Check[] = []

  // --- 1. abort latency -----------------------------------------------------
  const governedCtx = governedDb(governor, server.url, POOL_MAX)
  const governedExec = governedDb(governor, server.url, POOL_MAX)
  const kysely = plainDb(server.url, POOL_MAX)
  const monitor = new pg.Client({ connectionString: server.url, application_name: 'pg-governor bench monitor' })
  await monitor.connect()
  const cancelEvents: CancelEvent[] = []
  const execCancelEvents: CancelEvent[] = []
  governedCtx.dialect.events.on('cancel', (event) => cancelEvents.push(event))
  governedExec.dialect.events.on('cancel', (event) => execCancelEvents.push(event))

  // Kysely reports the cancelled query on console.error ("`query` failed in the background after abortion"): count, don't print.
  let kyselyBackgroundErrors = 0
  const consoleError = console.error
  console.error = (...args: unknown[]): void => {
    if (typeof args[0] === 'string' && args[0].includes('failed in the background after abortion')) kyselyBackgroundErrors++
    else consoleError(...args)
  }

  const setups: AbortSetup[] = [
    {
      key: 'governed',
      label: 'governed, withQueryContext({ signal })',
      run: (query, signal) => withQueryContext({ signal }, () => sql.raw(query).execute(governedCtx.db)),
      every: 1,
      cancels: cancelEvents,
    },
    {
      key: 'kysely',
      label: "kysely PostgresDialect, 'cancel query'",
      run: (query, signal) => sql.raw(query).execute(kysely.db, { signal, inflightQueryAbortStrategy: 'cancel query' }),
      every: 1,
    },
    {
      key: 'governed-exec',
      label: "governed, execute({ signal, 'cancel query' }) (info)",
      run: (query, signal) => sql.raw(query).execute(governedExec.db, { signal, inflightQueryAbortStrategy: 'cancel query' }),
      every: EXTRA_EVERY,
      cancels: execCancelEvents,
    },
  ]
  const trials = new Map<string, Trial[]>(setups.map((s) => [s.key, []]))
  let loadBefore = NaN
  let abortSummaries: { key: string; label: string; n: number; failures: number; reject: Summary; idle: Summary; clockUncertaintyP50: number; errors: Record<string, number> }[] = []
  try {
    console.log(`abort latency: select pg_sleep(10), abort ~${ABORT_AFTER_MS} ms after start; ${ABORT_WARMUP} warm-up + ${ABORTS} trials (every ${EXTRA_EVERY}th for the info row)`)
    process.stdout.write('  ')
    loadBefore = os.loadavg()[0] ?? NaN
    for (let i = -ABORT_WARMUP; i < ABORTS; i++) {
      const order = setups.map((_, k) => setups[(k + Math.max(i, 0)) % setups.length] as AbortSetup)
      for (const setup of order) {
        if (i >= 0 && i % setup.every !== 0) continue
        const trial = await abortTrial(monitor, setup, i)
        if (i >= 0) trials.get(setup.key)?.push(trial)
      }
      if (i >= 0 && (i + 1) % 20 === 0) process.stdout.write(`${i + 1} `)
    }
    process.stdout.write('\n')
  } finally {
    console.error = consoleError
  }
  // Cancels settle in the background; let the last ones land before counting.
  await sleep(200)
  abortSummaries = setups.map((s) => {
    const list = trials.get(s.key) ?? []
    const good = list.filter((t) => t.ok)
    const errors: Record<string, number> = {}
    for (const t of list) errors[t.error] = (errors[t.error] ?? 0) + 1
    return {
      key: s.key,
      label: s.label,
      n: list.length,
      failures: list.length - good.length,
      reject: summarize(good.map((t) => t.rejectMs)),
      idle: summarize(good.map((t) => t.idleMs)),
      clockUncertaintyP50: median(good.map((t) => t.clockUncertaintyMs)),
      errors,
    }
  })
  printTable(
    'abort -> promise rejected (local clock) and abort -> backend idle (server clock), ms',
    ['setup', 'n', 'fail', 'reject p50', 'reject p99', 'idle p50', 'idle p99', 'idle min', 'idle max', '±clock'],
    abortSummaries.map((s) => [
      s.label,
      s.n,
      s.failures,
      fmt(s.reject.p50, 3),
      fmt(s.reject.p99, 3),
      fmt(s.idle.p50, 3),
      fmt(s.idle.p99, 3),
      fmt(s.idle.min, 3),
      fmt(s.idle.max, 3),
      fmt(s.clockUncertaintyP50, 3),
    ]),
  )
  for (const s of abortSummaries) console.log(`  ${s.key}: rejections ${JSON.stringify(s.errors)}`)
  for (const s of setups) {
    const notes = (trials.get(s.key) ?? []).filter((t) => t.note).map((t) => t.note)
    if (notes.length) console.log(`  ${s.key}: ${notes.length} failed trials, first: ${notes[0]}`)
  }
  const methods: Record<string, number> = {}
  for (const e of cancelEvents) {
    const key = e.outcome ? `${e.outcome.method}${e.outcome.confirmed ? '' : ' (unconfirmed)'}` : 'failed'
    methods[key] = (methods[key] ?? 0) + 1
  }
  const cancelDurations = summarize(cancelEvents.flatMap((e) => (e.outcome ? [e.outcome.durationMs] : [])))
  console.log(
    `  governed cancels (warm-up included): ${JSON.stringify(methods)}, destroyed ${cancelEvents.filter((e) => e.destroyed).length}; ` +
      `cancel round trip p50 ${fmt(cancelDurations.p50, 3)} ms, p99 ${fmt(cancelDurations.p99, 3)} ms`,
  )
  const slow = (trials.get('governed') ?? []).filter((t) => t.ok && t.idleMs > 10)
  console.log(
    `  governed trials with backend idle > 10 ms: ${slow.length}` +
      (slow.length
        ? `; their pg_cancel_backend round trips (ms): ${slow.map((t) => fmt(t.cancelRoundTripMs ?? NaN, 1)).join(', ')}; idle (ms): ${slow.map((t) => fmt(t.idleMs, 1)).join(', ')}`
        : ''),
  )
  console.log(`  load average (1 min) before / after the abort trials: ${fmt(loadBefore, 2)} / ${fmt(os.loadavg()[0] ?? NaN, 2)} on ${os.cpus().length} CPUs`)
  console.log(`  kysely background "query failed after abortion" messages suppressed: ${kyselyBackgroundErrors}`)

  const ours = abortSummaries.find((s) => s.key === 'governed')!
  const theirs = abortSummaries.find((s) => s.key === 'kysely')!
  checks.push(
    check('governed abort->rejected p50', ours.reject.p50, '<=', 2, 'ms'),
    check('governed abort->rejected p99', ours.reject.p99, '<=', 10, 'ms'),
    check('governed abort->backend idle p50', ours.idle.p50, '<=', 2, 'ms'),
    check('governed abort->backend idle p99', ours.idle.p99, '<=', 10, 'ms'),
    check('backend idle speed-up vs kysely, p50', theirs.idle.p50 / ours.idle.p50, '>=', 3, 'x'),
    check('backend idle speed-up vs kysely, p99', theirs.idle.p99 / ours.idle.p99, '>=', 3, 'x'),
  )
  if (ours.failures > 0) checks.push(check('governed failed abort trials', ours.failures, '<=', 0))
  console.log(
    `  (abort->rejected: kysely/governed p50 ${fmt(theirs.reject.p50 / ours.reject.p50, 2)}x — info only: Kysely also rejects at once, racing the query against the signal)`,
  )
  await Promise.all([governedCtx.db.destroy(), governedExec.db.destroy(), kysely.db.destroy(), monitor.end()])

  // --- 2. statement_timeout SETs -------------------------------------------
  const counter = { sets: 0, values: new Map<string, number>() }
  const setsDb = governedDb(governor, server.url, POOL_MAX)
  setsDb.dialect.events.on('statementTimeout', (event) => {
    counter.sets++
    const key = String(event.valueMs)
    counter.values.set(key, (counter.values.get(key) ?? 0) + 1)
  })
  const steadyOp = select1WithDeadline(governor, setsDb.db, 3000)
  const steadyWarmup = 500
  await countedLoop(steadyWarmup, 16, steadyOp)
  const warmupSets = counter.sets
  await countedLoop(STEADY_QUERIES, 16, steadyOp)
  const steadySets = counter.sets - warmupSets
  const steady = {
    warmupQueries: steadyWarmup,
    warmupSets,
    queries: STEADY_QUERIES,
    sets: steadySets,
    perThousand: (steadySets / STEADY_QUERIES) * 1000,
    perThousandInclWarmup: ((warmupSets + steadySets) / (steadyWarmup + STEADY_QUERIES)) * 1000,
  }
  await setsDb.db.destroy()

  process.stdout.write('\nshrinking deadlines: ')
  const shrink: ShrinkResult[] = []
  for (const workers of [1, 4]) {
    const db = governedDb(governor, server.url, POOL_MAX)
    db.dialect.events.on('statementTimeout', (event) => {
      counter.sets++
      const key = String(event.valueMs)
      counter.values.set(key, (counter.values.get(key) ?? 0) + 1)
    })
    await select1(db.db)() // open a connection: its first SET is part of the request's cost below
    shrink.push(await shrinkingDeadlines(governor, db.db, counter, workers, SHRINK_REQUESTS))
    process.stdout.write(`${workers} worker(s) done; `)
    await db.db.destroy()
  }
  process.stdout.write('\n')
  const stepsSpanned = DEFAULT_STATEMENT_TIMEOUT_LADDER_MS.filter((s) => s <= 2000).length
  printTable(
    'statement_timeout SET round trips',
    ['traffic', 'queries', 'SETs', 'per 1000', 'per request', 'values SET'],
    [
      ['(a) steady, timeoutMs 3000, c=16, after warm-up', steady.queries, steady.sets, fmt(steady.perThousand, 2), '-', '-'],
      [`(a) warm-up (${POOL_MAX} new connections)`, steady.warmupQueries, steady.warmupSets, fmt((steady.warmupSets / steady.warmupQueries) * 1000, 2), '-', '-'],
      ...shrink.map((r) => [
        `(b) shrinking 2000 ms, ${r.workers} request(s) at once`,
        r.queries,
        r.sets,
        fmt(r.perThousand, 2),
        fmt(r.perRequest, 2),
        Object.entries(r.values)
          .map(([k, v]) => `${k}:${v}`)
          .join(' '),
      ]),
    ],
  )
  console.log(`  (b) a 2000 ms request spans ${stepsSpanned} ladder steps (${DEFAULT_STATEMENT_TIMEOUT_LADDER_MS.filter((s) => s <= 2000).join(', ')}); info only, no target`)
  for (const r of shrink) if (r.errors) console.log(`  (b) ${r.workers} worker(s): ${r.errors} query errors`)
  checks.push(check('(a) steady SETs per 1000 queries', steady.perThousand, '<=', 10, ''))

  // --- 3. throughput with a deadline ---------------------------------------
  const isolated = [
    await isolatedSetup('kysely PostgresDialect, no deadline', 'plain', { url: server.url, poolMax: POOL_MAX }),
    await isolatedSetup('governed, withQueryContext({ timeoutMs: 5000 })', 'deadline', { url: server.url, poolMax: POOL_MAX, timeoutMs: 5000 }),
  ]
  let rounds: SetupRounds[]
  try {
    process.stdout.write(`\nselect 1, c=16, each setup in its own process: warm-up`)
    rounds = await alternatingRounds(isolated, {
      concurrency: 16,
      rounds: ROUNDS,
      roundMs: ROUND_MS,
      warmupMs: WARMUP_MS,
      onRound: (r) => process.stdout.write(` r${r + 1}`),
    })
    process.stdout.write('\n')
  } finally {
    await Promise.all(isolated.map((setup) => setup.close()))
  }
  const [base, withDeadline] = rounds as [SetupRounds, SetupRounds]
  printTable(
    `select 1 at concurrency 16 — medians over ${ROUNDS} alternating rounds of ${ROUND_MS} ms`,
    [...MEDIAN_HEADERS, 'ops/s vs plain', 'paired ratio'],
    rounds.map((r) => [
      ...medianCells(r),
      fmt(r.medianThroughput / base.medianThroughput, 3),
      fmt(pairedRatio(r, base), 3),
    ]),
  )
  console.log(`  per round ops/s: plain ${base.rounds.map((r) => fmtInt(r.throughput)).join(' ')} | deadline ${withDeadline.rounds.map((r) => fmtInt(r.throughput)).join(' ')}`)
  checks.push(check('c=16 deadline/plain ops/s', withDeadline.medianThroughput / base.medianThroughput, '>=', 0.95, 'x'))
  if (base.errors + withDeadline.errors > 0) checks.push(check('errors during the rounds', base.errors + withDeadline.errors, '<=', 0))

  printChecks('targets', checks)
  const path = writeResults('cancel', {
    bench: 'cancel',
    machine: machine(),
    server: { version: server.version, source: server.source },
    library: governorLabel(),
    settings: { aborts: ABORTS, abortWarmup: ABORT_WARMUP, abortAfterMs: ABORT_AFTER_MS, idlePollDelayMs: IDLE_POLL_DELAY_MS, steadyQueries: STEADY_QUERIES, shrinkRequests: SHRINK_REQUESTS, rounds: ROUNDS, roundMs: ROUND_MS, warmupMs: WARMUP_MS, poolMax: POOL_MAX },
    knobs: knobs(['BENCH_ABORTS', 'BENCH_ABORT_WARMUP', 'BENCH_ABORT_AFTER_MS', 'BENCH_IDLE_POLL_DELAY_MS', 'BENCH_STEADY_QUERIES', 'BENCH_SHRINK_REQUESTS', 'BENCH_ROUNDS', 'BENCH_ROUND_MS', 'BENCH_WARMUP_MS', 'BENCH_POOL_MAX', 'BENCH_LIB', 'PG_BENCH_URL']),
    abort: {
      method: 'idle latency = pg_stat_activity.state_change (idle) - (local wall clock at abort + NTP-style offset to clock_timestamp())',
      summaries: abortSummaries,
      governedCancelMethods: methods,
      governedCancelRoundTripMs: cancelDurations,
      trials: Object.fromEntries(trials),
    },
    statementTimeoutSets: { steady, shrinking: shrink, ladderStepsSpannedBy2000ms: stepsSpanned },
    throughput: rounds.map((r) => ({ name: r.name, medianThroughput: r.medianThroughput, medianP50Ms: r.medianP50, medianP99Ms: r.medianP99, medianClientCpuUsPerOp: r.medianCpuUsPerOp, errors: r.errors, rounds: r.rounds })),
    checks,
    wallClockAtEnd: wallNow(),
  })
  console.log(`\nfigures written to ${path}`)
  return { allPassed: checks.every((c) => c.pass) }
})
