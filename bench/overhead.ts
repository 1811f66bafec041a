/**
 * Claim: "a pass-through must cost nothing measurable, and a deadline little".
 *
 * `select 1` throughput and latency, closed loop, at concurrency 1 and 16, on
 * one server, for each Node runtime in BENCH_NODES (default: the current one):
 *   - plain       Kysely's PostgresDialect                                  (the baseline)
 *   - governed    GovernedPostgresDialect, default config, no context       (target: throughput >= 0.98 x plain)
 *   - deadline    governed, each query inside withQueryContext({ timeoutMs: 5000 })
 *                                                                            (target: throughput >= 0.95 x plain)
 *   - plain+ALS   plain, each query inside AsyncLocalStorage.run(): no target; the floor that
 *                 any AsyncLocalStorage-based context pays on that runtime (see node-runtimes.ts:
 *                 up to Node 22 every promise in the process then runs async_hooks code)
 * Each setup runs in a child process of its own (bench/support/setup-worker.ts)
 * with its own pg.Pool, same settings (max 16): no setup inherits another's
 * heap, JIT state or AsyncLocalStorage hooks. After a warm-up of every setup,
 * the setups (of every runtime) run in alternating rounds, order rotated each
 * round. The machine's speed drifts over seconds (a shared 2-core VM: one
 * setup's ops/s moves by 30% between rounds), so the verdict is the median of
 * the per-round paired ratios, each comparing two runs at most one round
 * apart; the interquartile range of those ratios is printed beside it, and the
 * ratio of the medians too.
 *
 * Note: with the default config every governed statement already carries the
 * default policy's 30 s budget (defaultTimeoutMs), so "governed" runs the
 * deadline machinery too. `BENCH_OVERHEAD_EXTRA=1` adds "governed, no policy"
 * (`defaultTimeoutMs: null`, no deadline at all) and "governed, no warm"
 * (`warmConnections: false`: every release goes through pg-pool, as with
 * PostgresDialect); neither has a target.
 *
 * The library is measured as compiled by tsc (BENCH_LIB=build, default) or
 * from src/ through tsx (BENCH_LIB=src); see bench/support/lib.ts.
 *
 * By default the server runs on CPU 0 and every measured client on CPU 1
 * (bench/support/cpu-pinning.ts): steadier rounds, and the client's core is
 * the bottleneck, so the library's cost shows in full; BENCH_PIN=0 turns that off.
 *
 * Knobs: BENCH_NODES (current; e.g. current,22+acf,24), BENCH_PIN (1), BENCH_ROUNDS (16),
 * BENCH_ROUND_MS (500), BENCH_WARMUP_MS (1000), BENCH_CONCURRENCIES (1,16),
 * BENCH_POOL_MAX (16), BENCH_OVERHEAD_EXTRA, BENCH_LIB, PG_BENCH_URL,
 * BENCH_STRICT, BENCH_MAX_SECONDS.
 *
 *   npx tsx bench/overhead.ts      (npm run bench:overhead)
 */
import { isolatedSetup, type IsolatedSetup, type SetupKind } from './support/isolated.js'
import { alternatingRounds, MEDIAN_HEADERS, medianCells, pairedRatio, pairedRatioSpread, type SetupRounds } from './support/load.js'
import { envFlag, envInt, envIntList, knobs } from './support/env.js'
import { check, fmt, fmtInt, printChecks, printTable, type Check } from './support/format.js'
import { pinningWanted, pinServer } from './support/cpu-pinning.js'
import { governorLabel } from './support/lib.js'
import { nodeRuntimes, type NodeRuntime } from './support/node-runtimes.js'
import { machine, writeResults } from './support/results.js'
import { runBench } from './support/run.js'

const ROUNDS = envInt('BENCH_ROUNDS', 16)
const ROUND_MS = envInt('BENCH_ROUND_MS', 500)
const WARMUP_MS = envInt('BENCH_WARMUP_MS', 1000)
const POOL_MAX = envInt('BENCH_POOL_MAX', 16)
const CONCURRENCIES = envIntList('BENCH_CONCURRENCIES', [1, 16])
const DEADLINE_MS = 5000
const TARGETS: Partial<Record<SetupKind, number>> = { governed: 0.98, deadline: 0.95 }
const KINDS: readonly { readonly kind: SetupKind; readonly name: string }[] = [
  { kind: 'plain', name: 'plain' },
  { kind: 'governed', name: 'governed' },
  { kind: 'deadline', name: 'deadline' },
  { kind: 'plain-als', name: 'plain+ALS' },
  ...(envFlag('BENCH_OVERHEAD_EXTRA')
    ? [
        { kind: 'governed-no-policy' as const, name: 'governed, no policy' },
        { kind: 'governed-cold' as const, name: 'governed, no warm' },
      ]
    : []),
]

interface RuntimeSetup {
  readonly runtime: NodeRuntime
  readonly kind: SetupKind
  readonly setup: IsolatedSetup
}

runBench('overhead', async (server) => {
  const runtimes = nodeRuntimes()
  // Every setup keeps a full pool open (governed ones also a control connection); a server that cannot hold them all would fail rounds.
  const needed = runtimes.length * KINDS.length * (POOL_MAX + 1) + 1
  if (needed > server.maxConnections - 3) {
    throw new Error(`${runtimes.length} runtimes x ${KINDS.length} setups need up to ${needed} connections; the server allows ${server.maxConnections} (list fewer BENCH_NODES or lower BENCH_POOL_MAX)`)
  }
  const pinning = pinningWanted() ? await pinServer(server.url) : undefined
  const options = { url: server.url, poolMax: POOL_MAX, timeoutMs: DEADLINE_MS, pin: pinning !== undefined }
  const all: RuntimeSetup[] = []
  for (const runtime of runtimes) {
    const suffix = runtimes.length > 1 ? ` @${runtime.label}` : ''
    for (const { kind, name } of KINDS) all.push({ runtime, kind, setup: await isolatedSetup(`${name}${suffix}`, kind, { ...options, runtime }) })
  }

  console.log(
    `select 1, pool max ${POOL_MAX} per setup, ${ROUNDS} alternating rounds of ${ROUND_MS} ms per setup after ${WARMUP_MS} ms warm-up, concurrency ${CONCURRENCIES.join(' and ')}`,
  )
  console.log(`  CPU pinning: ${pinning?.description ?? 'off (BENCH_PIN=0)'}`)
  for (const runtime of runtimes) {
    console.log(`  ${runtime.label}: ${runtime.version} ${runtime.execPath}${runtime.execArgv.length ? ` ${runtime.execArgv.join(' ')}` : ''}; AsyncLocalStorage on ${runtime.asyncContextFrame ? 'async context frames' : 'async_hooks promise hooks'}`)
  }
  const byConcurrency: { concurrency: number; setups: SetupRounds[] }[] = []
  const checks: Check[] = []
  try {
    for (const concurrency of CONCURRENCIES) {
      process.stdout.write(`concurrency ${concurrency}: warm-up`)
      const results = await alternatingRounds(
        all.map((s) => s.setup),
        { concurrency, rounds: ROUNDS, roundMs: ROUND_MS, warmupMs: WARMUP_MS, onRound: (round) => process.stdout.write(` r${round + 1}`) },
      )
      process.stdout.write('\n')
      byConcurrency.push({ concurrency, setups: results })
      const resultOf = (s: RuntimeSetup): SetupRounds => results[all.indexOf(s)] as SetupRounds
      const baseOf = (s: RuntimeSetup): SetupRounds => resultOf(all.find((b) => b.runtime === s.runtime && b.kind === 'plain') as RuntimeSetup)
      printTable(
        `concurrency ${concurrency} — medians over ${ROUNDS} rounds; ratios against plain on the same runtime`,
        [...MEDIAN_HEADERS, 'ratio of medians', 'paired ratio', 'paired p25-p75'],
        all.map((s) => {
          const r = resultOf(s)
          const base = baseOf(s)
          if (r === base) return [...medianCells(r), '1.000', '1.000', '-']
          const spread = pairedRatioSpread(r, base)
          return [...medianCells(r), fmt(r.medianThroughput / base.medianThroughput, 3), fmt(spread.median, 3), `${fmt(spread.p25, 3)}-${fmt(spread.p75, 3)}`]
        }),
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
      for (const s of all) {
        const target = TARGETS[s.kind]
        if (target === undefined) continue
        const where = runtimes.length > 1 ? `${s.runtime.label} ` : ''
        checks.push(check(`${where}c=${concurrency} ${s.kind}/plain ops/s (paired)`, pairedRatio(resultOf(s), baseOf(s)), '>=', target, 'x'))
      }
    }
  } finally {
    await Promise.all(all.map((s) => s.setup.close()))
    pinning?.release()
  }

  const sets = Object.fromEntries(all.filter((s) => s.kind !== 'plain' && s.kind !== 'plain-als').map((s) => [s.setup.name, s.setup.sets()]))
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
    pinning: pinning?.description ?? 'off',
    runtimes: runtimes.map(({ label, version, execArgv, asyncContextFrame }) => ({ label, version, execArgv, asyncContextFrame })),
    settings: { rounds: ROUNDS, roundMs: ROUND_MS, warmupMs: WARMUP_MS, poolMax: POOL_MAX, concurrencies: CONCURRENCIES, deadlineMs: DEADLINE_MS },
    knobs: knobs(['BENCH_NODES', 'BENCH_PIN', 'BENCH_ROUNDS', 'BENCH_ROUND_MS', 'BENCH_WARMUP_MS', 'BENCH_CONCURRENCIES', 'BENCH_POOL_MAX', 'BENCH_OVERHEAD_EXTRA', 'BENCH_LIB', 'PG_BENCH_URL']),
    results: byConcurrency.map(({ concurrency, setups: list }) => ({
      concurrency,
      setups: all.map((s, i) => {
        const r = list[i] as SetupRounds
        const base = list[all.findIndex((b) => b.runtime === s.runtime && b.kind === 'plain')] as SetupRounds
        return {
          name: r.name,
          runtime: s.runtime.label,
          kind: s.kind,
          medianThroughput: r.medianThroughput,
          medianP50Ms: r.medianP50,
          medianP99Ms: r.medianP99,
          medianClientCpuUsPerOp: r.medianCpuUsPerOp,
          ratioOfMediansVsPlain: r.medianThroughput / base.medianThroughput,
          pairedRatioVsPlain: pairedRatioSpread(r, base),
          errors: r.errors,
          rounds: r.rounds,
        }
      }),
    })),
    statementTimeoutSets: sets,
    checks,
  })
  console.log(`\nfigures written to ${path}`)
  return { allPassed: checks.every((c) => c.pass) }
})
