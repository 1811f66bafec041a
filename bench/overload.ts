/**
 * Cascading failure under overload (issue 4): the same open-loop traffic
 * against four setups, one after another, on one server.
 *
 * Traffic: a FIXED arrival rate (open loop: requests start on schedule
 * whatever the ones already running do), BENCH_RATE (400) per second for
 * BENCH_SECONDS (30). Each request is critical with probability 10 %
 * (seeded, the same requests for every setup), sheddable otherwise, has a
 * 1 s deadline, and runs one `select pg_sleep(x) /* tag *\/`: x = 0.05 s in
 * the first half ("fast"), 0.2 s in the second ("slow": the slow deploy).
 * With a pool of 10 that is 2x the capacity in the fast half and 8x in the
 * slow half; critical work alone needs 2 and then 8 of the 10 connections.
 *
 * Setups (each with a pg.Pool of its own, max BENCH_POOL_MAX = 10):
 *   governed        GovernedPostgresDialect, per request
 *                   withQueryContext({ timeoutMs: 1000, criticality }), default admission
 *                   (sheddable refused at utilisation 0.8, critical never by utilisation)
 *   kysely-cancel   Kysely PostgresDialect, execute({ signal: AbortSignal.timeout(1000),
 *                   inflightQueryAbortStrategy: 'cancel query' })
 *   kysely-ignore   Kysely PostgresDialect, execute({ signal: AbortSignal.timeout(1000) }):
 *                   the default strategy 'ignore query' (the caller gets its error at 1 s,
 *                   the backend runs on). This is the "Kysely default" the targets compare with.
 *   kysely-nosignal Kysely PostgresDialect, no signal at all (what most applications run):
 *                   the caller (an HTTP client, a load balancer) gives up at 1 s, the
 *                   handler's query waits in pg-pool's queue and runs anyway. Reported as
 *                   a fourth, informational column. BENCH_OVERLOAD_SETUPS selects setups.
 *
 * Measured, per setup, criticality and phase (by arrival time):
 *   success rate; p50/p99 latency of successes (from the request's start, which is
 *   within the printed scheduler lag of its scheduled time); errors by kind
 *   (deadline while waiting for a connection / while running, canceled, shed by
 *   reason, gave up = the no-signal caller's own 1 s timeout, other);
 *   zombie backend-seconds: a monitor connection samples pg_stat_activity every
 *   BENCH_SAMPLE_MS (50) ms; every statement carries its request id in a SQL
 *   comment, so each active backend maps to its request. A backend seen active on a
 *   request whose caller already has its answer (an error: it gave up) is a zombie.
 *   Each sighting counts for the interval since the previous snapshot (the usual
 *   sampling estimate of the time integral of "zombie backends", unbiased when the
 *   zombies fall at random against the 50 ms grid). A lower bound is kept too: each
 *   sighting counts only from the later of the answer, the statement's query_start and
 *   the previous snapshot (so a zombie's tail after its last sighting is never counted).
 *   Answer and snapshot are compared on the server's clock (the answer's local
 *   wall-clock time + an NTP-style offset, bench/support/server-clock.ts);
 *   peak queue: governed dialect.poolStats().waiting, Kysely pool.waitingCount
 *   (which includes waiters whose caller has already given up), read at every arrival.
 * Success rate over time (1 s buckets by arrival) per setup and criticality is
 * drawn to bench/results/overload.svg; everything goes to bench/results/overload.json.
 *
 * Between setups: the pool is destroyed, BENCH_PAUSE_MS (1000) pause, then a check
 * that the server has no active client backend left (waits up to 5 s, then
 * terminates and reports what was left). The no-signal setup cannot be drained
 * (its queue holds thousands of requests nobody waits for); it is measured until
 * BENCH_DRAIN_MS after the last answer and the backlog left is reported.
 *
 * Targets (pg-governor): critical success >= 99 % in both phases with p99 under the
 * 1 s deadline; sheddable successes >= 70 % of the capacity critical leaves free
 * (pool max x phase length / x - critical arrivals; the default 0.8 sheddable threshold
 * keeps 20 % of the pool as headroom for critical, so 100 % is not the aim);
 * zombie backend-seconds <= 1. Kysely setups: figures side by side, no targets.
 *
 * Knobs: BENCH_RATE (400), BENCH_SECONDS (30), BENCH_POOL_MAX (10), BENCH_DEADLINE_MS (1000),
 * BENCH_FAST_SLEEP_MS (50), BENCH_SLOW_SLEEP_MS (200), BENCH_CRITICAL_PCT (10),
 * BENCH_SAMPLE_MS (50), BENCH_SEED (4), BENCH_PAUSE_MS (1000), BENCH_DRAIN_MS (2000),
 * BENCH_OVERLOAD_SETUPS (governed,kysely-cancel,kysely-ignore,kysely-nosignal),
 * BENCH_LIB, PG_BENCH_URL, BENCH_STRICT, BENCH_MAX_SECONDS.
 *
 *   npx tsx bench/overload.ts      (npm run bench:overload)
 */
import { randomBytes } from 'node:crypto'
import { sql } from 'kysely'
import pg from 'pg'
import { ActivitySampler, serverBackends, type ActivitySample } from './support/activity-sampler.js'
import { governedDb, plainDb } from './support/dialects.js'
import { envInt, knobs } from './support/env.js'
import { check, fmt, fmtInt, printChecks, printTable, type Cell, type Check } from './support/format.js'
import { governorLabel, type Governor } from './support/lib.js'
import { fixedRateArrivals, seededRandom, type OpenLoopResult } from './support/open-loop.js'
import { machine, writeResults } from './support/results.js'
import { runBench, sleep } from './support/run.js'
import { estimateClockOffset, wallNow, type ClockOffset } from './support/server-clock.js'
import { summarize } from './support/stats.js'
import { withTimeout } from '../src/context/with-timeout.js'
import { lineChartSvg, writeResultFile, type Series } from './support/svg-chart.js'

const RATE = envInt('BENCH_RATE', 400)
const SECONDS = envInt('BENCH_SECONDS', 30, 2)
const POOL_MAX = envInt('BENCH_POOL_MAX', 10)
const DEADLINE_MS = envInt('BENCH_DEADLINE_MS', 1000)
const FAST_MS = envInt('BENCH_FAST_SLEEP_MS', 50)
const SLOW_MS = envInt('BENCH_SLOW_SLEEP_MS', 200)
const CRITICAL_PCT = envInt('BENCH_CRITICAL_PCT', 10, 0)
const SAMPLE_MS = envInt('BENCH_SAMPLE_MS', 50)
const SEED = envInt('BENCH_SEED', 4, 0)
const PAUSE_MS = envInt('BENCH_PAUSE_MS', 1000, 0)
const DRAIN_MS = envInt('BENCH_DRAIN_MS', 2000, 0)

const SETUP_KEYS = ['governed', 'kysely-cancel', 'kysely-ignore', 'kysely-nosignal'] as const
type SetupKey = (typeof SETUP_KEYS)[number]
const SELECTED: SetupKey[] = (process.env['BENCH_OVERLOAD_SETUPS'] ?? SETUP_KEYS.join(',')).split(',').map((raw) => {
  const key = raw.trim()
  if (!(SETUP_KEYS as readonly string[]).includes(key)) throw new Error(`BENCH_OVERLOAD_SETUPS: unknown setup ${JSON.stringify(key)} (known: ${SETUP_KEYS.join(', ')})`)
  return key as SetupKey
})

const TOTAL = RATE * SECONDS
const FAST_COUNT = Math.floor(TOTAL / 2)
const NONCE = randomBytes(3).toString('hex')
/** Every statement carries `/* ${MARKER}<setup>:<request> *\/`. */
const MARKER = `ovl:${NONCE}:`
const SHEDDABLE_TARGET_PCT = 70
const CRITICAL_TARGET_PCT = 99
const ZOMBIE_TARGET_S = 1

type Crit = 'critical' | 'sheddable'
type Phase = 'fast' | 'slow'
const CRITS: readonly Crit[] = ['critical', 'sheddable']
const PHASES: readonly Phase[] = ['fast', 'slow']

/** Error kinds, in print order. */
const KINDS = ['deadline_waiting', 'deadline_running', 'gave_up', 'canceled', 'shed_utilisation', 'shed_deadline', 'shed_queue', 'shed_circuit_open', 'other'] as const
type Kind = (typeof KINDS)[number]

const SETUP_INFO: Record<SetupKey, { readonly label: string; readonly color: string }> = {
  governed: { label: 'pg-governor', color: '#1b9e77' },
  'kysely-cancel': { label: "kysely 'cancel query'", color: '#d95f02' },
  'kysely-ignore': { label: "kysely 'ignore query' (default)", color: '#7570b3' },
  'kysely-nosignal': { label: 'kysely, no signal', color: '#e7298a' },
}

/** The no-signal caller's own timeout: it stops waiting, the query goes on. */
class ClientGaveUp extends Error {
  constructor() {
    super(`caller gave up after ${DEADLINE_MS} ms (the query goes on)`)
    this.name = 'ClientGaveUp'
  }
}

interface Request {
  readonly index: number
  readonly crit: Crit
  readonly phase: Phase
  startedAt: number
  answeredAt: number
  /** Local wall clock (ms) of the answer, NaN until answered. */
  answeredWall: number
  ok: boolean
  kind: Kind | 'ok' | 'pending'
  zombieMs: number
}

/** One setup, live. */
interface Instance {
  run(text: string, crit: Crit): Promise<unknown>
  queue(): number
  warm(): Promise<void>
  destroy(): Promise<void>
  info(): Record<string, unknown>
}

interface CellSummary {
  readonly crit: Crit
  readonly phase: Phase
  readonly n: number
  readonly ok: number
  readonly successPct: number
  readonly p50Ms: number
  readonly p99Ms: number
  readonly maxMs: number
  readonly errors: Record<Kind, number>
  readonly zombieS: number
}

interface SecondBucket {
  readonly second: number
  readonly critical: { n: number; ok: number }
  readonly sheddable: { n: number; ok: number }
  queueMax: number
  activeSum: number
  zombieSum: number
  samples: number
}

interface SetupResult {
  readonly key: SetupKey
  readonly label: string
  readonly requests: number
  readonly cells: CellSummary[]
  readonly zombie: {
    /** Sampled: each sighting counts for the interval since the previous snapshot. */
    readonly backendSeconds: number
    /** Each sighting counts only from max(answer, query_start, previous snapshot). */
    readonly backendSecondsLowerBound: number
    readonly queries: number
    readonly sightings: number
    readonly sightingsAfterSuccess: number
    readonly otherSetupSightings: number
  }
  readonly peakQueue: Record<Phase | 'drain', number>
  readonly schedule: OpenLoopResult
  readonly sampler: { readonly samples: number; readonly meanIntervalMs: number; readonly maxGapMs: number }
  readonly clock: ClockOffset
  readonly unanswered: number
  readonly backlogAtStop: { readonly queued: number; readonly activeBackends: number; readonly owedBackendSeconds: number }
  readonly cleanup: Cleanup
  readonly backgroundErrors: number
  readonly otherErrorSamples: string[]
  readonly perSecond: {
    readonly second: number
    readonly criticalSuccessPct: number | null
    readonly sheddableSuccessPct: number | null
    readonly queueMax: number
    readonly meanActiveBackends: number | null
    readonly meanZombieBackends: number | null
  }[]
  readonly info: Record<string, unknown>
  readonly wallSeconds: number
}

interface Cleanup {
  readonly destroyMs: number
  readonly activeAfterPause: number
  readonly activeAtCheck: number
  readonly connectionsAtCheck: number
  readonly terminated: number
  readonly leftoverQueries: string[]
}

function classify(error: unknown): Kind {
  if (error instanceof ClientGaveUp) return 'gave_up'
  const e = (error ?? {}) as { code?: unknown; reason?: unknown; phase?: unknown; name?: unknown; __kysely_timing__?: unknown }
  switch (e.code) {
    case 'LOAD_SHED': {
      const kind = `shed_${String(e.reason)}`
      return (KINDS as readonly string[]).includes(kind) ? (kind as Kind) : 'other'
    }
    case 'DEADLINE_EXCEEDED':
      return e.phase === 'running' ? 'deadline_running' : 'deadline_waiting'
    case 'QUERY_CANCELED':
    case '57014':
      return 'canceled'
  }
  if (e.name === 'TimeoutError') {
    // Kysely rethrows the signal's reason, tagged with where it was when the signal fired.
    const timing = String(e.__kysely_timing__ ?? '')
    return timing.includes('acquireConnection') || timing.startsWith('before') ? 'deadline_waiting' : 'deadline_running'
  }
  return 'other'
}

function describe(error: unknown): string {
  if (error instanceof Error) return `${error.name}${(error as { code?: unknown }).code ? `(${String((error as { code?: unknown }).code)})` : ''}: ${error.message.slice(0, 160)}`
  return String(error)
}

/** Kysely reports queries that fail after an abort on console.error: counted per setup, not printed. */
const backgroundErrors = { count: 0 }

function makeInstance(key: SetupKey, governor: Governor, url: string): Instance {
  const warmConcurrently = async (op: () => Promise<unknown>): Promise<void> => {
    for (let round = 0; round < 3; round++) await Promise.all(Array.from({ length: POOL_MAX }, op))
  }
  if (key === 'governed') {
    const { withQueryContext } = governor
    const g = governedDb(governor, url, POOL_MAX)
    const cancels: Record<string, number> = {}
    g.dialect.events.on('cancel', (event) => {
      const method = event.outcome?.method ?? (event.error ? 'failed' : 'unknown')
      cancels[method] = (cancels[method] ?? 0) + 1
    })
    return {
      run: (text, crit) => withQueryContext({ timeoutMs: DEADLINE_MS, criticality: crit }, () => sql.raw(text).execute(g.db)),
      queue: () => g.dialect.poolStats().waiting,
      warm: () => warmConcurrently(() => withQueryContext({ timeoutMs: 5000, criticality: 'critical' }, () => sql`select 1`.execute(g.db))),
      destroy: () => g.db.destroy(),
      info: () => {
        const stats = g.dialect.poolStats()
        return { serverSideCancelsByMethod: cancels, meanUseMsAtEnd: stats.meanUseMs, meanWaitMsAtEnd: stats.meanWaitMs }
      },
    }
  }
  const k = plainDb(url, POOL_MAX)
  const base = {
    queue: () => k.pool.waitingCount,
    warm: () => warmConcurrently(() => sql`select 1`.execute(k.db)),
    destroy: () => k.db.destroy(),
    info: () => ({}),
  }
  if (key === 'kysely-cancel') {
    return { ...base, run: (text) => sql.raw(text).execute(k.db, { signal: AbortSignal.timeout(DEADLINE_MS), inflightQueryAbortStrategy: 'cancel query' }) }
  }
  if (key === 'kysely-ignore') {
    return { ...base, run: (text) => sql.raw(text).execute(k.db, { signal: AbortSignal.timeout(DEADLINE_MS) }) }
  }
  return {
    ...base,
    run: (text) => withTimeout(sql.raw(text).execute(k.db), DEADLINE_MS, () => new ClientGaveUp()),
  }
}

/** Waits until no client backend is active (up to 5 s), then terminates what is left and says so. */
async function settleServer(monitor: pg.Client): Promise<Omit<Cleanup, 'destroyMs'>> {
  const first = await serverBackends(monitor)
  let state = first
  const until = performance.now() + 5000
  while (state.active > 0 && performance.now() < until) {
    await sleep(100)
    state = await serverBackends(monitor)
  }
  let terminated = 0
  if (state.active > 0) {
    const { rows } = await monitor.query<{ ok: boolean }>(
      `select pg_terminate_backend(pid) as ok from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid() and state = 'active'`,
    )
    terminated = rows.filter((r) => r.ok).length
  }
  return { activeAfterPause: first.active, activeAtCheck: state.active, connectionsAtCheck: state.total, terminated, leftoverQueries: state.activeQueries.slice(0, 5) }
}

async function runSetup(key: SetupKey, governor: Governor, url: string, monitor: pg.Client, critical: readonly boolean[]): Promise<SetupResult> {
  const wallStart = performance.now()
  const instance = makeInstance(key, governor, url)
  await instance.warm()
  const clock = await estimateClockOffset(monitor, 7)
  backgroundErrors.count = 0

  const requests: Request[] = new Array<Request>(TOTAL)
  const buckets: SecondBucket[] = Array.from({ length: SECONDS }, (_, second) => ({
    second,
    critical: { n: 0, ok: 0 },
    sheddable: { n: 0, ok: 0 },
    queueMax: 0,
    activeSum: 0,
    zombieSum: 0,
    samples: 0,
  }))
  const peakQueue: Record<Phase | 'drain', number> = { fast: 0, slow: 0, drain: 0 }
  const otherErrors = new Set<string>()
  const prefix = `${key}:`
  let answered = 0
  let arrivalsDone = false
  let loopStart = performance.now()
  let zombieMs = 0
  let zombieLowerMs = 0
  let sightings = 0
  let sightingsAfterSuccess = 0
  let otherSetupSightings = 0
  let lastActive = 0
  const zombieQueries = new Set<number>()

  const onSample = (sample: ActivitySample): void => {
    let active = 0
    let zombies = 0
    for (const backend of sample.backends) {
      if (!backend.tag.startsWith(prefix)) {
        otherSetupSightings++
        continue
      }
      const request = requests[Number(backend.tag.slice(prefix.length))]
      if (!request) continue
      active++
      if (Number.isNaN(request.answeredWall)) continue
      const answeredServerMs = request.answeredWall + clock.offsetMs
      if (answeredServerMs >= sample.serverMs) continue
      // Busy on this statement since query_start; its caller has had its answer since answeredServerMs.
      const interval = sample.previousServerMs === undefined ? 0 : sample.serverMs - sample.previousServerMs
      const from = Math.max(answeredServerMs, backend.queryStartMs, sample.previousServerMs ?? -Infinity)
      zombies++
      sightings++
      if (request.ok) sightingsAfterSuccess++
      request.zombieMs += interval
      zombieMs += interval
      zombieLowerMs += Math.max(0, sample.serverMs - from)
      zombieQueries.add(request.index)
    }
    lastActive = active
    const second = Math.min(SECONDS - 1, Math.max(0, Math.floor((performance.now() - loopStart) / 1000)))
    const bucket = buckets[second] as SecondBucket
    if (!arrivalsDone) {
      bucket.activeSum += active
      bucket.zombieSum += zombies
      bucket.samples++
    } else {
      peakQueue.drain = Math.max(peakQueue.drain, instance.queue())
    }
  }
  const sampler = new ActivitySampler(monitor, MARKER, SAMPLE_MS, onSample)

  const settle = (request: Request, kind: Kind | 'ok', error?: unknown): void => {
    request.answeredAt = performance.now()
    request.answeredWall = wallNow()
    request.ok = kind === 'ok'
    request.kind = kind
    answered++
    if (kind === 'other' && otherErrors.size < 5) otherErrors.add(describe(error))
    const bucket = buckets[Math.min(SECONDS - 1, Math.floor(request.index / RATE))] as SecondBucket
    if (request.ok) bucket[request.crit].ok++
  }

  process.stdout.write(`\n[${key}] ${SETUP_INFO[key].label}: ${TOTAL} requests at ${RATE}/s for ${SECONDS} s ... `)
  sampler.start()
  loopStart = performance.now()
  const schedule = await fixedRateArrivals(RATE, TOTAL, (index) => {
    const phase: Phase = index < FAST_COUNT ? 'fast' : 'slow'
    const crit: Crit = critical[index] ? 'critical' : 'sheddable'
    const sleepS = (phase === 'fast' ? FAST_MS : SLOW_MS) / 1000
    const request: Request = { index, crit, phase, startedAt: performance.now(), answeredAt: NaN, answeredWall: NaN, ok: false, kind: 'pending', zombieMs: 0 }
    requests[index] = request
    const bucket = buckets[Math.min(SECONDS - 1, Math.floor(index / RATE))] as SecondBucket
    bucket[crit].n++
    let pending: Promise<unknown>
    try {
      pending = instance.run(`select pg_sleep(${sleepS}) /* ${MARKER}${key}:${index} */`, crit)
    } catch (error) {
      pending = Promise.reject(error)
    }
    pending.then(
      () => settle(request, 'ok'),
      (error: unknown) => settle(request, classify(error), error),
    )
    const depth = instance.queue()
    if (depth > peakQueue[phase]) peakQueue[phase] = depth
    if (depth > bucket.queueMax) bucket.queueMax = depth
  })
  arrivalsDone = true
  const lastArrival = performance.now()
  // Every caller has its answer within its deadline (plus the timer's slack).
  while (answered < TOTAL && performance.now() < lastArrival + DEADLINE_MS + DRAIN_MS) await sleep(20)
  // Then until the server is quiet for this setup, or DRAIN_MS more.
  const drainUntil = performance.now() + DRAIN_MS
  while ((lastActive > 0 || instance.queue() > 0) && performance.now() < drainUntil) await sleep(SAMPLE_MS)
  await sampler.stop()
  const backlogQueued = instance.queue()
  const backlogActive = lastActive
  const unanswered = TOTAL - answered
  const backlogSleepS = SLOW_MS / 1000
  const info = instance.info()
  const destroyStart = performance.now()
  await Promise.race([instance.destroy(), sleep(15_000)])
  const destroyMs = performance.now() - destroyStart
  await sleep(PAUSE_MS)
  const cleanup: Cleanup = { destroyMs, ...(await settleServer(monitor)) }

  const cells: CellSummary[] = []
  for (const crit of CRITS) {
    for (const phase of PHASES) {
      const list = requests.filter((r) => r.crit === crit && r.phase === phase)
      const okList = list.filter((r) => r.ok)
      const latency = summarize(okList.map((r) => r.answeredAt - r.startedAt))
      const errors = Object.fromEntries(KINDS.map((k) => [k, 0])) as Record<Kind, number>
      for (const r of list) if (r.kind !== 'ok' && r.kind !== 'pending') errors[r.kind]++
      cells.push({
        crit,
        phase,
        n: list.length,
        ok: okList.length,
        successPct: list.length ? (okList.length / list.length) * 100 : NaN,
        p50Ms: latency.p50,
        p99Ms: latency.p99,
        maxMs: latency.max,
        errors,
        zombieS: list.reduce((sum, r) => sum + r.zombieMs, 0) / 1000,
      })
    }
  }
  const pct = (c: { n: number; ok: number }): number | null => (c.n ? (c.ok / c.n) * 100 : null)
  const result: SetupResult = {
    key,
    label: SETUP_INFO[key].label,
    requests: TOTAL,
    cells,
    zombie: { backendSeconds: zombieMs / 1000, backendSecondsLowerBound: zombieLowerMs / 1000, queries: zombieQueries.size, sightings, sightingsAfterSuccess, otherSetupSightings },
    peakQueue,
    schedule,
    sampler: sampler.stats,
    clock,
    unanswered,
    backlogAtStop: { queued: backlogQueued, activeBackends: backlogActive, owedBackendSeconds: backlogQueued * backlogSleepS },
    cleanup,
    backgroundErrors: backgroundErrors.count,
    otherErrorSamples: [...otherErrors],
    perSecond: buckets.map((b) => ({
      second: b.second,
      criticalSuccessPct: pct(b.critical),
      sheddableSuccessPct: pct(b.sheddable),
      queueMax: b.queueMax,
      meanActiveBackends: b.samples ? b.activeSum / b.samples : null,
      meanZombieBackends: b.samples ? b.zombieSum / b.samples : null,
    })),
    info,
    wallSeconds: (performance.now() - wallStart) / 1000,
  }
  const okAll = requests.filter((r) => r.ok).length
  process.stdout.write(
    `done: ${fmt((okAll / TOTAL) * 100, 1)} % ok, zombie ${fmt(result.zombie.backendSeconds, 2)} backend-s, peak queue ${Math.max(peakQueue.fast, peakQueue.slow)}, lag p99 ${fmt(schedule.lagP99Ms, 1)} ms` +
      `${unanswered ? `, ${unanswered} unanswered` : ''}${backlogQueued ? `, backlog left ${backlogQueued}` : ''}; ` +
      `after ${PAUSE_MS} ms pause: ${cleanup.activeAfterPause} active backend(s)${cleanup.terminated ? `, ${cleanup.terminated} terminated` : ''}`,
  )
  return result
}

/** What critical work leaves free in a phase, in requests: pool x phase length / x - critical arrivals. */
function freeCapacity(phase: Phase, criticalArrivals: number): number {
  const count = phase === 'fast' ? FAST_COUNT : TOTAL - FAST_COUNT
  const sleepMs = phase === 'fast' ? FAST_MS : SLOW_MS
  return Math.max(0, (POOL_MAX * (count / RATE) * 1000) / sleepMs - criticalArrivals)
}

/** Milliseconds, or '-' when there was nothing to measure (no success). */
function ms(value: number): string {
  return Number.isFinite(value) ? fmt(value, 0) : '-'
}

function cell(result: SetupResult, crit: Crit, phase: Phase): CellSummary {
  return result.cells.find((c) => c.crit === crit && c.phase === phase) as CellSummary
}

function chart(results: readonly SetupResult[]): string {
  const series = (crit: Crit): Series[] =>
    results.map((r) => ({
      label: r.label,
      color: SETUP_INFO[r.key].color,
      ...(r.key === 'kysely-nosignal' ? { dash: '6 4' } : {}),
      points: r.perSecond.map((s) => [s.second + 0.5, crit === 'critical' ? s.criticalSuccessPct : s.sheddableSuccessPct] as const),
    }))
  // Say so when the Kysely lines hide one another.
  const overlap = (crit: Crit): string => {
    const kysely = results.filter((r) => r.key !== 'governed')
    if (kysely.length < 2) return ''
    let worst = 0
    for (let second = 0; second < SECONDS; second++) {
      const values = kysely.map((r) => (crit === 'critical' ? r.perSecond[second]?.criticalSuccessPct : r.perSecond[second]?.sheddableSuccessPct) ?? NaN)
      worst = Math.max(worst, Math.max(...values) - Math.min(...values))
    }
    return worst <= 2 ? ` (the ${kysely.length} Kysely lines lie on top of one another: within 2 points every second)` : ''
  }
  return lineChartSvg(
    [
      { title: `critical (${CRITICAL_PCT} % of requests)${overlap('critical')}`, series: series('critical') },
      { title: `sheddable (${100 - CRITICAL_PCT} % of requests)${overlap('sheddable')}`, series: series('sheddable') },
    ],
    {
      title: 'Success rate over time under overload, by setup',
      subtitle: `${RATE} req/s open loop for ${SECONDS} s, pool max ${POOL_MAX}, ${DEADLINE_MS} ms deadlines; select pg_sleep(${FAST_MS / 1000}) then pg_sleep(${SLOW_MS / 1000}); 1 s buckets by arrival`,
      xLabel: 'seconds since start of traffic',
      yLabel: 'success rate (%)',
      xMax: SECONDS,
      yMax: 100,
      xTickEvery: [1, 2, 5, 10, 20, 30, 60].find((step) => SECONDS / step <= 12) ?? 60,
      yTicks: [0, 25, 50, 75, 100],
      yFormat: (y) => `${y}%`,
      markers: [{ x: FAST_COUNT / RATE, label: `slow deploy: ${FAST_MS} -> ${SLOW_MS} ms` }],
    },
  )
}

runBench('overload', async (server, governor) => {
  const monitor = new pg.Client({ connectionString: server.url, application_name: 'pg-governor bench monitor' })
  await monitor.connect()
  const random = seededRandom(SEED)
  const critical = Array.from({ length: TOTAL }, () => random() * 100 < CRITICAL_PCT)
  const criticalArrivals: Record<Phase, number> = {
    fast: critical.slice(0, FAST_COUNT).filter(Boolean).length,
    slow: critical.slice(FAST_COUNT).filter(Boolean).length,
  }
  const free: Record<Phase, number> = { fast: freeCapacity('fast', criticalArrivals.fast), slow: freeCapacity('slow', criticalArrivals.slow) }
  console.log(
    `open loop ${RATE}/s x ${SECONDS} s = ${fmtInt(TOTAL)} requests per setup (${criticalArrivals.fast + criticalArrivals.slow} critical), pool max ${POOL_MAX}, deadline ${DEADLINE_MS} ms; ` +
      `pg_sleep ${FAST_MS} ms then ${SLOW_MS} ms: offered load ${fmt((RATE * FAST_MS) / 1000 / POOL_MAX, 1)}x then ${fmt((RATE * SLOW_MS) / 1000 / POOL_MAX, 1)}x the pool; ` +
      `pg_stat_activity sampled every ${SAMPLE_MS} ms; setups: ${SELECTED.join(', ')}`,
  )
  const baseline = await settleServer(monitor)
  console.log(`server before the first setup: ${baseline.connectionsAtCheck} other client connection(s), ${baseline.activeAtCheck} active`)

  const consoleError = console.error
  console.error = (...args: unknown[]): void => {
    if (typeof args[0] === 'string' && args[0].includes('failed in the background after abortion')) backgroundErrors.count++
    else consoleError(...args)
  }
  const results: SetupResult[] = []
  try {
    for (const key of SELECTED) results.push(await runSetup(key, governor, server.url, monitor, critical))
  } finally {
    console.error = consoleError
    process.stdout.write('\n')
  }
  await monitor.end()

  // --- per setup, criticality and phase ------------------------------------
  const rows: Cell[][] = []
  for (const r of results) {
    for (const crit of CRITS) {
      for (const phase of PHASES) {
        const c = cell(r, crit, phase)
        rows.push([
          r.label,
          crit,
          phase,
          c.n,
          `${fmt(c.successPct, 1)}%`,
          ms(c.p50Ms),
          ms(c.p99Ms),
          c.errors.deadline_waiting,
          c.errors.deadline_running,
          c.errors.gave_up,
          c.errors.canceled,
          c.errors.shed_utilisation,
          c.errors.shed_deadline,
          c.errors.shed_queue + c.errors.shed_circuit_open,
          c.errors.other,
          fmt(c.zombieS, 2),
          r.peakQueue[phase],
        ])
      }
    }
  }
  printTable(
    `per setup, criticality and phase (fast: pg_sleep ${FAST_MS} ms, first ${SECONDS / 2} s; slow: ${SLOW_MS} ms, last ${SECONDS / 2} s); latency of successes in ms; errors by kind; zombie backend-s; peak queue in the phase`,
    ['setup', 'crit', 'phase', 'n', 'success', 'p50', 'p99', 'dl wait', 'dl run', 'gave up', 'cancel', 'shed util', 'shed dl', 'shed q/circ', 'other', 'zombie s', 'peak q'],
    rows,
  )
  console.log(
    "  dl wait/dl run: deadline (1 s) hit while waiting for a connection / while the query ran; gave up: the no-signal caller's own 1 s timeout (its query goes on);\n" +
      '  shed util/dl/q/circ: LoadShedError by reason (utilisation, deadline feasibility, queue bound, circuit open); other: anything else (samples in the JSON).',
  )

  // --- side by side ---------------------------------------------------------
  const totalFree = free.fast + free.slow
  const sheddableOk = (r: SetupResult): number => cell(r, 'sheddable', 'fast').ok + cell(r, 'sheddable', 'slow').ok
  printTable(
    'side by side',
    ['', ...results.map((r) => r.label)],
    [
      ['critical success, fast / slow', ...results.map((r) => `${fmt(cell(r, 'critical', 'fast').successPct, 1)}% / ${fmt(cell(r, 'critical', 'slow').successPct, 1)}%`)],
      ['critical p99 ms, fast / slow', ...results.map((r) => `${ms(cell(r, 'critical', 'fast').p99Ms)} / ${ms(cell(r, 'critical', 'slow').p99Ms)}`)],
      ['sheddable success, fast / slow', ...results.map((r) => `${fmt(cell(r, 'sheddable', 'fast').successPct, 1)}% / ${fmt(cell(r, 'sheddable', 'slow').successPct, 1)}%`)],
      [
        `sheddable ok vs free capacity, fast (${fmtInt(free.fast)})`,
        ...results.map((r) => `${fmtInt(cell(r, 'sheddable', 'fast').ok)} (${fmt((cell(r, 'sheddable', 'fast').ok / free.fast) * 100, 0)}%)`),
      ],
      [
        `sheddable ok vs free capacity, slow (${fmtInt(free.slow)})`,
        ...results.map((r) => `${fmtInt(cell(r, 'sheddable', 'slow').ok)} (${fmt((cell(r, 'sheddable', 'slow').ok / free.slow) * 100, 0)}%)`),
      ],
      [`sheddable ok vs free capacity, all (${fmtInt(totalFree)})`, ...results.map((r) => `${fmtInt(sheddableOk(r))} (${fmt((sheddableOk(r) / totalFree) * 100, 0)}%)`)],
      ['all requests ok', ...results.map((r) => fmtInt(r.cells.reduce((s, c) => s + c.ok, 0)))],
      ['zombie backend-seconds (sampled)', ...results.map((r) => fmt(r.zombie.backendSeconds, 2))],
      ['zombie backend-seconds, lower bound', ...results.map((r) => fmt(r.zombie.backendSecondsLowerBound, 2))],
      ['queries seen as zombies', ...results.map((r) => fmtInt(r.zombie.queries))],
      ['peak queue, fast / slow (kysely: incl. abandoned waiters)', ...results.map((r) => `${r.peakQueue.fast} / ${r.peakQueue.slow}`)],
      ['backlog left at stop (queued)', ...results.map((r) => `${fmtInt(r.backlogAtStop.queued)}${r.backlogAtStop.queued ? ` (~${fmt(r.backlogAtStop.owedBackendSeconds, 0)} backend-s owed)` : ''}`)],
      ['kysely background errors', ...results.map((r) => fmtInt(r.backgroundErrors))],
      ['scheduler lag p99 / max ms', ...results.map((r) => `${fmt(r.schedule.lagP99Ms, 1)} / ${fmt(r.schedule.lagMaxMs, 1)}`)],
      ['activity samples, mean / max gap ms', ...results.map((r) => `${r.sampler.samples}, ${fmt(r.sampler.meanIntervalMs, 0)} / ${fmt(r.sampler.maxGapMs, 0)}`)],
      ['active backends after pause (terminated)', ...results.map((r) => `${r.cleanup.activeAfterPause} (${r.cleanup.terminated})`)],
    ],
  )
  console.log(
    `  free capacity = pool max ${POOL_MAX} x phase length / pg_sleep - critical arrivals (${criticalArrivals.fast} fast, ${criticalArrivals.slow} slow); it ignores per-query overhead, so it is an upper bound.`,
  )
  const governedResult = results.find((r) => r.key === 'governed')
  if (governedResult) console.log(`  pg-governor: ${JSON.stringify(governedResult.info)}`)
  for (const r of results) if (r.otherErrorSamples.length) console.log(`  ${r.label} 'other' errors, samples: ${r.otherErrorSamples.join(' | ')}`)
  for (const r of results) {
    if (r.cleanup.activeAfterPause || r.cleanup.terminated) console.log(`  ${r.label}: left active after the pause: ${r.cleanup.leftoverQueries.join(' | ')}`)
    if (r.zombie.sightingsAfterSuccess) console.log(`  ${r.label}: ${r.zombie.sightingsAfterSuccess} sighting(s) of a backend still active after its caller's success (clock skew)`)
  }

  // --- targets --------------------------------------------------------------
  const checks: Check[] = []
  if (governedResult) {
    const g = governedResult
    for (const phase of PHASES) {
      checks.push(check(`pg-governor critical success, ${phase} phase`, cell(g, 'critical', phase).successPct, '>=', CRITICAL_TARGET_PCT, '%'))
    }
    for (const phase of PHASES) {
      checks.push(check(`pg-governor critical p99 (successes), ${phase}, under the deadline`, cell(g, 'critical', phase).p99Ms, '<=', DEADLINE_MS, 'ms'))
    }
    checks.push(check(`pg-governor sheddable ok / free capacity (${fmtInt(totalFree)})`, (sheddableOk(g) / totalFree) * 100, '>=', SHEDDABLE_TARGET_PCT, '%'))
    checks.push(check('pg-governor zombie backend-seconds', g.zombie.backendSeconds, '<=', ZOMBIE_TARGET_S, 's'))
    printChecks('targets (pg-governor; the Kysely figures are side by side above)', checks)
  } else {
    console.log('\n(no targets: the governed setup was not selected)')
  }

  const svgPath = writeResultFile('overload.svg', chart(results))
  const path = writeResults('overload', {
    bench: 'overload',
    machine: machine(),
    server: { version: server.version, source: server.source, maxConnections: server.maxConnections },
    library: governorLabel(),
    settings: {
      rate: RATE,
      seconds: SECONDS,
      requestsPerSetup: TOTAL,
      poolMax: POOL_MAX,
      deadlineMs: DEADLINE_MS,
      fastSleepMs: FAST_MS,
      slowSleepMs: SLOW_MS,
      criticalPct: CRITICAL_PCT,
      criticalArrivals,
      sampleMs: SAMPLE_MS,
      seed: SEED,
      pauseMs: PAUSE_MS,
      drainMs: DRAIN_MS,
      setups: SELECTED,
    },
    knobs: knobs([
      'BENCH_RATE',
      'BENCH_SECONDS',
      'BENCH_POOL_MAX',
      'BENCH_DEADLINE_MS',
      'BENCH_FAST_SLEEP_MS',
      'BENCH_SLOW_SLEEP_MS',
      'BENCH_CRITICAL_PCT',
      'BENCH_SAMPLE_MS',
      'BENCH_SEED',
      'BENCH_PAUSE_MS',
      'BENCH_DRAIN_MS',
      'BENCH_OVERLOAD_SETUPS',
      'BENCH_LIB',
      'PG_BENCH_URL',
    ]),
    method: {
      arrivals: 'open loop, fixed rate; criticality seeded-random, identical for every setup; phase and 1 s bucket by arrival index',
      latency: 'from the request start (within the scheduler lag of its scheduled time) to its answer; successes only',
      zombie:
        "pg_stat_activity sampled every sampleMs; each statement tagged with its request id; a sighting of an active backend whose request's caller already had its answer (server clock: local wall clock + NTP-style offset) adds the interval since the previous snapshot (backendSeconds); the lower bound adds only serverMs - max(answer, query_start, previous snapshot)",
      freeCapacity: 'pool max x phase seconds x 1000 / pg_sleep ms - critical arrivals in the phase (no per-query overhead: an upper bound)',
    },
    freeCapacity: free,
    baseline,
    results,
    checks,
    chart: svgPath,
  })
  console.log(`\nchart written to ${svgPath}\nfigures written to ${path}`)
  return { allPassed: checks.every((c) => c.pass) }
})
