/**
 * Claim: "a pass-through must cost nothing measurable".
 *
 * `select 1` throughput and latency, closed loop, at concurrency 1 and 16, on
 * one server, for:
 *   - plain     Kysely's PostgresDialect                                  (the baseline)
 *   - governed  GovernedPostgresDialect, default config, no context       (target: throughput >= 0.98 x plain)
 *   - deadline  governed, each query inside withQueryContext({ timeoutMs: 5000 })
 *                                                                          (target: throughput >= 0.95 x plain)
 * Each setup runs in a child process of its own (bench/support/setup-worker.ts)
 * with its own pg.Pool, same settings (max 16): no setup inherits another's
 * heap, JIT state or AsyncLocalStorage hooks. After a
 * warm-up of every setup, the setups run in alternating rounds (order rotated
 * each round); the figures are the medians over rounds, and the ratio is
 * median(governed) / median(plain). The median of the per-round paired
 * ratios is printed too, as a check on drift.
 *
 * Note: with the default config every governed statement already carries the
 * default policy's 30 s budget (defaultTimeoutMs), so "governed" runs the
 * deadline machinery too. `BENCH_OVERHEAD_EXTRA=1` adds two diagnostic setups
 * (no target): governed with `defaultTimeoutMs: null` (no deadline at all),
 * and plain with each query inside `AsyncLocalStorage.run()` (the floor any
 * ALS-based context propagation costs on this Node version).
 *
 * The library is measured as compiled by tsc (BENCH_LIB=build, default) or
 * from src/ through tsx (BENCH_LIB=src); see bench/support/lib.ts.
 *
 * Knobs: BENCH_ROUNDS (6), BENCH_ROUND_MS (1500), BENCH_WARMUP_MS (1000),
 * BENCH_CONCURRENCIES (1,16), BENCH_POOL_MAX (16), BENCH_OVERHEAD_EXTRA,
 * BENCH_LIB, PG_BENCH_URL, BENCH_STRICT, BENCH_MAX_SECONDS.
 *
 *   npx tsx bench/overhead.ts      (npm run bench:overhead)
 */
import { isolatedSetup, type IsolatedSetup } from './support/isolated.js'
import { alternatingRounds, MEDIAN_HEADERS, medianCells, pairedRatio, type SetupRounds } from './support/load.js'
import { envFlag, envInt, knobs } from './support/env.js'
import { check, fmt, fmtInt, printChecks, printTable, type Check } from './support/format.js'
import { governorLabel } from './support/lib.js'
import { machine, writeResults } from './support/results.js'
import { runBench } from './support/run.js'

const ROUNDS = envInt('BENCH_ROUNDS', 6)
const ROUND_MS = envInt('BENCH_ROUND_MS', 1500)
const WARMUP_MS = envInt('BENCH_WARMUP_MS', 1000)
const POOL_MAX = envInt('BENCH_POOL_MAX', 16)
const CONCURRENCIES = (process.env['BENCH_CONCURRENCIES'] ?? '1,16').split(',').map((s) => {
  const n = Number(s.trim())
  if (!Number.isInteger(n) || n < 1) throw new Error(`BENCH_CONCURRENCIES: bad value ${JSON.stringify(s)}`)
  return n
})
const DEADLINE_MS = 5000
const TARGET_PASSTHROUGH = 0.98
const TARGET_DEADLINE = 0.95

runBench('overhead', async (server) => {
  const options = { url: server.url, poolMax: POOL_MAX }
  const setups: IsolatedSetup[] = [
    await isolatedSetup('plain', 'plain', options),
    await isolatedSetup('governed', 'governed', options),
    await isolatedSetup('deadline', 'deadline', { ...options, timeoutMs: DEADLINE_MS }),
  ]
  if (envFlag('BENCH_OVERHEAD_EXTRA')) {
    setups.push(await isolatedSetup('governed, no policy', 'governed-no-policy', options))
    setups.push(await isolatedSetup('plain + ALS.run', 'plain-als', options))
  }

  console.log(
    `select 1, pool max ${POOL_MAX} per setup, ${ROUNDS} alternating rounds of ${ROUND_MS} ms per setup after ${WARMUP_MS} ms warm-up, concurrency ${CONCURRENCIES.join(' and ')}`,
  )
  const byConcurrency: { concurrency: number; setups: SetupRounds[] }[] = []
  const checks: Check[] = []
  try {
    for (const concurrency of CONCURRENCIES) {
      process.stdout.write(`concurrency ${concurrency}: warm-up`)
      const results = await alternatingRounds(setups, {
        concurrency,
        rounds: ROUNDS,
        roundMs: ROUND_MS,
        warmupMs: WARMUP_MS,
        onRound: (round) => process.stdout.write(` r${round + 1}`),
      })
      process.stdout.write('\n')
      byConcurrency.push({ concurrency, setups: results })
      const base = results[0] as SetupRounds
      printTable(
        `concurrency ${concurrency} — medians over ${ROUNDS} rounds`,
        [...MEDIAN_HEADERS, 'ops/s vs plain', 'paired ratio'],
        results.map((r) => [
          ...medianCells(r),
          r === base ? '1.000' : fmt(r.medianThroughput / base.medianThroughput, 3),
          r === base ? '1.000' : fmt(pairedRatio(r, base), 3),
        ]),
      )
      printTable(
        `concurrency ${concurrency} — ops/s per round`,
        ['round', ...results.map((r) => r.name)],
        Array.from({ length: ROUNDS }, (_, i) => [i + 1, ...results.map((r) => fmtInt(r.rounds[i]?.throughput ?? NaN))]),
      )
      for (const r of results) {
        const firstError = r.rounds.find((x) => x.firstError)?.firstError
        if (firstError) console.log(`  ${r.name}: ${r.errors} errors, first: ${firstError}`)
      }
      const byName = (name: string): SetupRounds => results.find((r) => r.name === name) as SetupRounds
      checks.push(
        check(`c=${concurrency} governed/plain ops/s`, byName('governed').medianThroughput / base.medianThroughput, '>=', TARGET_PASSTHROUGH, 'x'),
        check(`c=${concurrency} deadline/plain ops/s`, byName('deadline').medianThroughput / base.medianThroughput, '>=', TARGET_DEADLINE, 'x'),
      )
    }
  } finally {
    await Promise.all(setups.map((setup) => setup.close()))
  }

  const sets = Object.fromEntries(setups.slice(1).map((setup) => [setup.name, setup.sets()]))
  console.log(
    `\nstatement_timeout SETs sent during the whole run (warm-ups included): ${Object.entries(sets)
      .map(([name, n]) => `${name} ${n}`)
      .join(', ')}`,
  )
  const errors = byConcurrency.flatMap((c) => c.setups).reduce((sum, r) => sum + r.errors, 0)
  if (errors > 0) checks.push(check('errors during the rounds', errors, '<=', 0, ''))
  printChecks('targets', checks)
  const path = writeResults('overhead', {
    bench: 'overhead',
    machine: machine(),
    server: { version: server.version, source: server.source },
    library: governorLabel(),
    settings: { rounds: ROUNDS, roundMs: ROUND_MS, warmupMs: WARMUP_MS, poolMax: POOL_MAX, concurrencies: CONCURRENCIES, deadlineMs: DEADLINE_MS },
    knobs: knobs(['BENCH_ROUNDS', 'BENCH_ROUND_MS', 'BENCH_WARMUP_MS', 'BENCH_CONCURRENCIES', 'BENCH_POOL_MAX', 'BENCH_OVERHEAD_EXTRA', 'BENCH_LIB', 'PG_BENCH_URL']),
    results: byConcurrency.map(({ concurrency, setups: list }) => ({
      concurrency,
      setups: list.map((r) => ({
        name: r.name,
        medianThroughput: r.medianThroughput,
        medianP50Ms: r.medianP50,
        medianP99Ms: r.medianP99,
        medianClientCpuUsPerOp: r.medianCpuUsPerOp,
        ratioVsPlain: r.medianThroughput / (list[0] as SetupRounds).medianThroughput,
        pairedRatioVsPlain: pairedRatio(r, list[0] as SetupRounds),
        errors: r.errors,
        rounds: r.rounds,
      })),
    })),
    statementTimeoutSets: sets,
    checks,
  })
  console.log(`\nfigures written to ${path}`)
  return { allPassed: checks.every((c) => c.pass) }
})

