/**
 * Claim (issue 5): "turning the observability on costs at most 3% of throughput".
 *
 * `select 1` throughput and latency, closed loop, at concurrency 1 and 16, on
 * one server, for:
 *   - plain  Kysely's PostgresDialect                                      (context)
 *   - off    GovernedPostgresDialect, default config, no metrics, no logger (the baseline)
 *   - on     the same dialect with
 *              registerPrometheusMetrics(dialect, { registry: new Registry(), poolName: 'bench' }),
 *              scraped with `await registry.metrics()` once per second, as Prometheus would, and
 *              logger: pino({ level: 'info' }, pino.destination({ dest: <file under os.tmpdir()>, sync: false })),
 *              logging: { slowQueryMs: 1000 }: no per-query line fires, as in production when nothing is slow
 *                                                                       (target: ops/s >= 0.97 x off)
 * Each setup runs in a child process of its own (bench/support/telemetry-worker.ts)
 * with its own pg.Pool, same settings (max 16). After a warm-up of every
 * setup, the setups run in alternating rounds (order rotated each round). The
 * machine's speed drifts over seconds, so the verdict is the median of the
 * per-round paired ratios on/off (two runs at most one round apart), printed
 * with their interquartile range; the ratio of the medians is printed too.
 * By default the server runs on CPU 0 and every measured client on CPU 1
 * (bench/support/cpu-pinning.ts): the client's core is then the bottleneck and
 * the telemetry's cost shows in full; BENCH_PIN=0 turns that off.
 *
 * The scraper's timer runs for the whole life of the worker at a fixed phase
 * and scrapes only while a round is in progress, so a round of R ms holds
 * about R/1000 scrapes and no scrape lands in another setup's round.
 *
 * The run also checks that the telemetry did its job: the metric's query count
 * equals the queries run, and the log file holds the worker's start line and
 * nothing else.
 *
 * The library is measured as compiled by tsc (BENCH_LIB=build, default; the
 * `pg-governor/prometheus` export is that build's telemetry/prometheus-metrics.js,
 * as in dist/) or from src/ through tsx (BENCH_LIB=src); see
 * bench/support/lib.ts and bench/support/telemetry-lib.ts.
 *
 * Knobs: BENCH_PIN (1), BENCH_ROUNDS (20), BENCH_ROUND_MS (500), BENCH_WARMUP_MS (1000),
 * BENCH_CONCURRENCIES (1,16), BENCH_POOL_MAX (16), BENCH_SCRAPE_MS (1000),
 * BENCH_SLOW_QUERY_MS (1000), BENCH_TELEMETRY_EXTRA=1 (adds "metrics only" and
 * "logging only" setups, no target), BENCH_TELEMETRY_PROFILE=1 (runs the
 * governed workers under --cpu-prof and prints where their CPU went; the
 * profiler's own cost makes that run's ratios no verdict),
 * BENCH_TELEMETRY_PROFILE_INTERVAL_US (250), BENCH_TELEMETRY_KEEP_FILES=1
 * (keeps the log files and profiles), BENCH_LIB, PG_BENCH_URL, BENCH_STRICT,
 * BENCH_MAX_SECONDS.
 *
 *   npx tsx bench/telemetry.ts      (npm run bench:telemetry)
 */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { alternatingRounds, MEDIAN_HEADERS, medianCells, pairedRatio, pairedRatioSpread, type SetupRounds } from './support/load.js'
import { envFlag, envInt, envIntList, knobs } from './support/env.js'
import { check, fmt, fmtInt, printChecks, printTable, type Check } from './support/format.js'
import { pinningWanted, pinServer } from './support/cpu-pinning.js'
import { governorLabel } from './support/lib.js'
import { machine, writeResults } from './support/results.js'
import { runBench } from './support/run.js'
import { median } from './support/stats.js'
import { summarizeCpuProfile, type FrameFilter, type ProfileSummary } from './support/telemetry-profile.js'
import { telemetrySetup, type ScrapeStats, type TelemetryKind, type TelemetrySetup, type TelemetryTotals } from './support/telemetry-setup.js'

const ROUNDS = envInt('BENCH_ROUNDS', 20)
const ROUND_MS = envInt('BENCH_ROUND_MS', 500)
const WARMUP_MS = envInt('BENCH_WARMUP_MS', 1000)
const POOL_MAX = envInt('BENCH_POOL_MAX', 16)
const SCRAPE_MS = envInt('BENCH_SCRAPE_MS', 1000)
const SLOW_QUERY_MS = envInt('BENCH_SLOW_QUERY_MS', 1000)
const EXTRA = envFlag('BENCH_TELEMETRY_EXTRA')
const PROFILE = envFlag('BENCH_TELEMETRY_PROFILE')
const PROFILE_INTERVAL_US = envInt('BENCH_TELEMETRY_PROFILE_INTERVAL_US', 250)
const KEEP_FILES = envFlag('BENCH_TELEMETRY_KEEP_FILES')
const CONCURRENCIES = envIntList('BENCH_CONCURRENCIES', [1, 16])
const TARGET = 0.97

const SETUPS: { name: string; kind: TelemetryKind }[] = [
  { name: 'plain', kind: 'plain' },
  { name: 'off', kind: 'off' },
  { name: 'on', kind: 'on' },
  ...(EXTRA
    ? [
        { name: 'metrics only', kind: 'metrics-only' as const },
        { name: 'logging only', kind: 'logging-only' as const },
      ]
    : []),
]

const endsWith = (suffix: string) => (frame: { url: string }) => frame.url.endsWith(suffix)
const isEmit = (frame: { functionName: string; url: string }): boolean =>
  frame.functionName === 'emit' && (frame.url.endsWith('/telemetry/governor-events.js') || frame.url.endsWith('/telemetry/governor-events.ts'))
/** Inclusive-time buckets for the profiles; "under emit" keeps scrape-time collect() callbacks out of the listener figures. */
const PROFILE_FILTERS: FrameFilter[] = [
  { label: 'GovernorEvents.emit: every listener, inclusive', match: isEmit },
  { label: '  metrics listeners (prometheus-metrics.js under emit)', within: isEmit, match: (f) => endsWith('/telemetry/prometheus-metrics.js')(f) || endsWith('/telemetry/prometheus-metrics.ts')(f) },
  { label: '    of which prom-client code', within: isEmit, match: (f) => f.url.includes('/node_modules/prom-client/') },
  { label: '  logging listener (logging.js under emit)', within: isEmit, match: (f) => endsWith('/telemetry/logging.js')(f) || endsWith('/telemetry/logging.ts')(f) },
  { label: 'scrapes: prom-client registry.metrics()', match: (f) => f.url.includes('/node_modules/prom-client/lib/registry.js') },
  { label: 'pino + sonic-boom, anywhere', match: (f) => /\/node_modules\/(pino|sonic-boom|thread-stream)/.test(f.url) },
]

function spreadCell(spread: { readonly p25: number; readonly p75: number }): string {
  return `${fmt(spread.p25, 3)}-${fmt(spread.p75, 3)}`
}

runBench('telemetry', async (server) => {
  const workDir = mkdtempSync(join(tmpdir(), 'pg-governor-bench-telemetry-'))
  const options = { url: server.url, poolMax: POOL_MAX, slowQueryMs: SLOW_QUERY_MS, scrapeMs: SCRAPE_MS }
  const profileDir = (kind: TelemetryKind): string => join(workDir, `profile-${kind}`)
  const setups: TelemetrySetup[] = []
  const totals = new Map<string, TelemetryTotals>()
  const byConcurrency: { concurrency: number; setups: SetupRounds[]; scrapes: Map<string, ScrapeStats[]> }[] = []
  const checks: Check[] = []
  const pinning = pinningWanted() ? await pinServer(server.url) : undefined
  try {
    for (const { name, kind } of SETUPS) {
      const profiled = PROFILE && kind !== 'plain'
      const execArgv = profiled ? ['--cpu-prof', `--cpu-prof-dir=${profileDir(kind)}`, `--cpu-prof-interval=${PROFILE_INTERVAL_US}`] : []
      setups.push(await telemetrySetup(name, kind, { ...options, logFile: join(workDir, `${kind}.log`) }, execArgv, pinning !== undefined))
    }
    console.log(
      `select 1, pool max ${POOL_MAX} per setup, ${ROUNDS} alternating rounds of ${ROUND_MS} ms per setup after ${WARMUP_MS} ms warm-up, concurrency ${CONCURRENCIES.join(' and ')}`,
    )
    console.log(
      `on = registerPrometheusMetrics into a fresh Registry, scraped every ${SCRAPE_MS} ms during its rounds + pino level info to ${join(workDir, 'on.log')} (sync: false), slowQueryMs ${SLOW_QUERY_MS}`,
    )
    console.log(`CPU pinning: ${pinning?.description ?? 'off (BENCH_PIN=0)'}`)
    if (PROFILE) console.log(`PROFILED RUN (--cpu-prof every ${PROFILE_INTERVAL_US} us in the governed workers): the ratios below are no verdict`)

    for (const concurrency of CONCURRENCIES) {
      process.stdout.write(`concurrency ${concurrency}: warm-up`)
      const firstRun = new Map(setups.map((s) => [s.name, s.scrapes.length]))
      const results = await alternatingRounds(setups, {
        concurrency,
        rounds: ROUNDS,
        roundMs: ROUND_MS,
        warmupMs: WARMUP_MS,
        onRound: (round) => process.stdout.write(` r${round + 1}`),
      })
      process.stdout.write('\n')
      // Scrape figures of the measured rounds (the warm-up run is the first of this concurrency's runs).
      const scrapes = new Map(setups.map((s) => [s.name, s.scrapes.slice((firstRun.get(s.name) ?? 0) + 1)]))
      byConcurrency.push({ concurrency, setups: results, scrapes })
      const byName = (name: string): SetupRounds => results.find((r) => r.name === name) as SetupRounds
      const plain = byName('plain')
      const off = byName('off')
      const on = byName('on')
      printTable(
        `concurrency ${concurrency} — medians over ${ROUNDS} rounds`,
        [...MEDIAN_HEADERS, 'ops/s vs off', 'paired vs off', 'paired p25-p75', 'ops/s vs plain', 'paired vs plain'],
        results.map((r) => [
          ...medianCells(r),
          r === plain ? '-' : fmt(r.medianThroughput / off.medianThroughput, 3),
          r === plain || r === off ? '-' : fmt(pairedRatio(r, off), 3),
          r === plain || r === off ? '-' : spreadCell(pairedRatioSpread(r, off)),
          r === plain ? '-' : fmt(r.medianThroughput / plain.medianThroughput, 3),
          r === plain ? '-' : fmt(pairedRatio(r, plain), 3),
        ]),
      )
      printTable(
        `concurrency ${concurrency} — ops/s per round`,
        ['round', ...results.map((r) => r.name)],
        Array.from({ length: ROUNDS }, (_, i) => [i + 1, ...results.map((r) => fmtInt(r.rounds[i]?.throughput ?? NaN))]),
      )
      const scraped = setups.filter((s) => s.kind === 'on' || s.kind === 'metrics-only')
      printTable(
        `concurrency ${concurrency} — scrapes during the measured rounds`,
        ['setup', 'scrapes', 'per second', 'median ms', 'max ms', 'body bytes'],
        scraped.map((s) => {
          const list = scrapes.get(s.name) ?? []
          const count = list.reduce((sum, x) => sum + x.scrapes, 0)
          const runMs = ROUNDS * ROUND_MS
          return [
            s.name,
            count,
            fmt((count / runMs) * 1000, 2),
            fmt(median(list.filter((x) => x.scrapes > 0).map((x) => x.totalMs / x.scrapes)), 2),
            fmt(Math.max(0, ...list.map((x) => x.maxMs)), 2),
            fmtInt(list.at(-1)?.bytes ?? NaN),
          ]
        }),
      )
      console.log(
        `  client CPU added by the telemetry: ${fmt(on.medianCpuUsPerOp - off.medianCpuUsPerOp, 1)} us/op (on ${fmt(on.medianCpuUsPerOp, 1)} vs off ${fmt(off.medianCpuUsPerOp, 1)}); governed off vs plain: ${fmt(off.medianCpuUsPerOp - plain.medianCpuUsPerOp, 1)} us/op`,
      )
      for (const r of results) {
        const firstError = r.rounds.find((x) => x.firstError)?.firstError
        if (firstError) console.log(`  ${r.name}: ${r.errors} errors, first: ${firstError}`)
      }
      checks.push(check(`c=${concurrency} on/off ops/s (paired)`, pairedRatio(on, off), '>=', TARGET, 'x'))
    }
  } finally {
    for (const setup of setups) totals.set(setup.name, await setup.close())
    pinning?.release()
  }

  // Did the telemetry do its job? (Otherwise the "on" figures would measure nothing.)
  const onSetup = setups.find((s) => s.kind === 'on') as TelemetrySetup
  const onTotals = totals.get('on') ?? {}
  printTable(
    'telemetry sanity (whole run, warm-ups included)',
    ['setup', 'queries run', 'pg_governor_queries_total', 'duration observations', 'scrapes', 'log lines', 'log levels', 'log bytes'],
    setups
      .filter((s) => s.kind !== 'plain' && s.kind !== 'off')
      .map((s) => {
        const t = totals.get(s.name) ?? {}
        return [
          s.name,
          fmtInt(s.operations()),
          t.queriesCounted === undefined ? '-' : fmtInt(t.queriesCounted),
          t.durationsObserved === undefined ? '-' : fmtInt(t.durationsObserved),
          t.scrapes ?? '-',
          t.logLines ?? '-',
          t.logLevels ? Object.entries(t.logLevels).map(([level, n]) => `${level} ${n}`).join(', ') : '-',
          t.logBytes ?? '-',
        ]
      }),
  )
  checks.push(check('on: queries the metric missed (run - counted)', onSetup.operations() - (onTotals.queriesCounted ?? NaN), '<=', 0, ''))
  checks.push(check('on: log lines beyond the start line', (onTotals.logLines ?? NaN) - 1, '<=', 0, ''))
  const errors = byConcurrency.flatMap((c) => c.setups).reduce((sum, r) => sum + r.errors, 0)
  if (errors > 0) checks.push(check('errors during the rounds', errors, '<=', 0, ''))

  const profiles: Record<string, ProfileSummary & { operations: number }> = {}
  if (PROFILE) {
    for (const setup of setups.filter((s) => s.kind !== 'plain')) {
      const dir = profileDir(setup.kind)
      // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile: thread 0 is the main thread (tsx's module hooks thread writes one too).
      const file = readdirSync(dir).find((f) => /\.\d+\.0\.\d+\.cpuprofile$/.test(f))
      if (!file) {
        console.log(`\nno profile was written for ${setup.name} in ${dir}`)
        continue
      }
      const summary = summarizeCpuProfile(join(dir, file), PROFILE_FILTERS)
      const ops = setup.operations()
      profiles[setup.name] = { ...summary, operations: ops }
      const usPerOp = (ms: number): string => fmt((ms * 1000) / ops, 2)
      console.log(`\nprofile of "${setup.name}": ${fmt(summary.busyMs, 0)} ms busy over ${fmtInt(ops)} queries (${usPerOp(summary.busyMs)} us/op, warm-ups and IPC included)`)
      printTable(
        `  ${setup.name}: inclusive time`,
        ['frames', 'ms', 'us/op', '% of busy'],
        summary.inclusive.map((x) => [x.label, fmt(x.ms, 0), usPerOp(x.ms), fmt((100 * x.ms) / summary.busyMs, 1)]),
      )
      printTable(
        `  ${setup.name}: self time by package`,
        ['package', 'ms', 'us/op', '% of busy'],
        summary.byPackage.slice(0, 10).map((x) => [x.name, fmt(x.selfMs, 0), usPerOp(x.selfMs), fmt((100 * x.selfMs) / summary.busyMs, 1)]),
      )
      printTable(
        `  ${setup.name}: top functions by self time`,
        ['function', 'where', 'ms', 'us/op', '% of busy'],
        summary.topFunctions.map((x) => [x.name, x.where, fmt(x.selfMs, 0), usPerOp(x.selfMs), fmt((100 * x.selfMs) / summary.busyMs, 1)]),
      )
    }
  }

  printTable(
    'summary (medians; "paired" is the median of per-round ratios)',
    ['concurrency', 'on/off ops/s', 'paired on/off', 'on/plain ops/s', 'off/plain ops/s', 'CPU on-off us/op', 'p99 on ms', 'p99 off ms'],
    byConcurrency.map(({ concurrency, setups: list }) => {
      const get = (name: string): SetupRounds => list.find((r) => r.name === name) as SetupRounds
      const [plain, off, on] = [get('plain'), get('off'), get('on')]
      return [
        concurrency,
        fmt(on.medianThroughput / off.medianThroughput, 3),
        fmt(pairedRatio(on, off), 3),
        fmt(on.medianThroughput / plain.medianThroughput, 3),
        fmt(off.medianThroughput / plain.medianThroughput, 3),
        fmt(on.medianCpuUsPerOp - off.medianCpuUsPerOp, 1),
        fmt(on.medianP99, 3),
        fmt(off.medianP99, 3),
      ]
    }),
  )
  printChecks(PROFILE ? 'targets (PROFILED RUN: no verdict)' : 'targets', checks)
  if (KEEP_FILES) console.log(`\nlog files${PROFILE ? ' and profiles' : ''} kept in ${workDir}`)
  else rmSync(workDir, { recursive: true, force: true })

  const path = writeResults(PROFILE ? 'telemetry-profiled' : 'telemetry', {
    bench: 'telemetry',
    machine: machine(),
    server: { version: server.version, source: server.source },
    library: governorLabel(),
    pinning: pinning?.description ?? 'off',
    settings: {
      rounds: ROUNDS,
      roundMs: ROUND_MS,
      warmupMs: WARMUP_MS,
      poolMax: POOL_MAX,
      concurrencies: CONCURRENCIES,
      scrapeMs: SCRAPE_MS,
      slowQueryMs: SLOW_QUERY_MS,
      logger: "pino({ level: 'info' }, pino.destination({ sync: false })) to a file under os.tmpdir()",
      profiled: PROFILE,
    },
    knobs: knobs([
      'BENCH_PIN',
      'BENCH_ROUNDS',
      'BENCH_ROUND_MS',
      'BENCH_WARMUP_MS',
      'BENCH_CONCURRENCIES',
      'BENCH_POOL_MAX',
      'BENCH_SCRAPE_MS',
      'BENCH_SLOW_QUERY_MS',
      'BENCH_TELEMETRY_EXTRA',
      'BENCH_TELEMETRY_PROFILE',
      'BENCH_TELEMETRY_PROFILE_INTERVAL_US',
      'BENCH_LIB',
      'PG_BENCH_URL',
    ]),
    results: byConcurrency.map(({ concurrency, setups: list, scrapes }) => {
      const off = list.find((r) => r.name === 'off') as SetupRounds
      const plain = list.find((r) => r.name === 'plain') as SetupRounds
      return {
        concurrency,
        setups: list.map((r) => ({
          name: r.name,
          medianThroughput: r.medianThroughput,
          medianP50Ms: r.medianP50,
          medianP99Ms: r.medianP99,
          medianClientCpuUsPerOp: r.medianCpuUsPerOp,
          ratioVsOff: r.medianThroughput / off.medianThroughput,
          pairedRatioVsOff: pairedRatioSpread(r, off),
          ratioVsPlain: r.medianThroughput / plain.medianThroughput,
          pairedRatioVsPlain: pairedRatio(r, plain),
          errors: r.errors,
          rounds: r.rounds,
          scrapes: scrapes.get(r.name),
        })),
      }
    }),
    telemetry: Object.fromEntries(setups.map((s) => [s.name, { operations: s.operations(), ...totals.get(s.name) }])),
    profiles,
    checks,
  })
  console.log(`\nfigures written to ${path}`)
  return { allPassed: checks.every((c) => c.pass) }
})
