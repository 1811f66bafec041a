/**
 * Claim: what the library adds to each query, counted rather than timed.
 *
 * The throughput benches (overhead.ts, telemetry.ts) measure the issues' targets
 * directly, but on a shared 2-core VM their rounds move by tens of percent, so
 * a 2-5% effect hides in their noise. This bench counts the client's CPU
 * instructions per `select 1` instead, under valgrind's callgrind. The count
 * is the same from run to run, whatever else the machine is doing. The server
 * is a real PostgreSQL, as everywhere; only the client process is counted.
 *
 * For each Node runtime in BENCH_NODES (see support/node-runtimes.ts) and each setup
 *   - plain          Kysely's PostgresDialect
 *   - plain+ALS      plain, each query inside AsyncLocalStorage.run() (the floor of any ALS context)
 *   - governed       GovernedPostgresDialect, default config
 *   - governed, no warm   the same with warmConnections: false (every release through pg-pool)
 *   - deadline       governed, each query inside withQueryContext({ timeoutMs: 5000 })
 *   - telemetry on   governed + registerPrometheusMetrics + a pino logger (slowQueryMs 1000; no scrapes counted)
 * the worker (support/instructions-worker.ts) runs under callgrind with
 * instrumentation off and with V8's --single-threaded, so that no background
 * compiler or GC thread adds a count that depends on timing. After its
 * warm-up, the parent turns instrumentation on (`callgrind_control -i on`),
 * the worker runs exactly BENCH_COUNT queries at concurrency 16, and
 * instrumentation goes off again: start-up and warm-up are not counted.
 *
 * Counts are steadier than times, but not exact: on our machine the same setup
 * came back within 4% from run to run. On Node 20 the governed setups landed
 * in one of two modes about 13% apart, presumably depending on whether a
 * compilation or a major GC fell inside the counted queries. Run it more than
 * once before reading a difference of a few percent.
 *
 * Instructions are not time: a cache miss or a syscall costs more than its
 * count, and the kernel's share of a query (the socket write, more than half of
 * the client's CPU per query, see overhead.ts) is not counted at all. The ratio
 * below is therefore an upper bound on the library's share of the client's work.
 * A client-bound service's throughput ratio is roughly its inverse.
 *
 * Needs valgrind (Debian's package, with callgrind_control). A counted run takes
 * about a minute; two run at a time (BENCH_PARALLEL).
 *
 * Knobs: BENCH_NODES (current), BENCH_KINDS (all; e.g. governed,telemetry-on), BENCH_WARMUP_COUNT (6000), BENCH_COUNT (3000),
 * BENCH_PARALLEL (2), PG_BENCH_URL, BENCH_STRICT, BENCH_MAX_SECONDS (default here 1800).
 *
 *   npx tsx bench/instructions.ts      (npm run bench:instructions)
 */
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { envInt, knobs } from './support/env.js'
import { check, fmt, fmtInt, printChecks, printTable, type Check } from './support/format.js'
import type { InstructionKind } from './support/instructions-worker.js'
import { governorLabel } from './support/lib.js'
import { nodeRuntimes, type NodeRuntime } from './support/node-runtimes.js'
import { machine, writeResults } from './support/results.js'
import { runBench } from './support/run.js'

process.env['BENCH_MAX_SECONDS'] ??= '1800'

const WARMUP = envInt('BENCH_WARMUP_COUNT', 6000)
const COUNT = envInt('BENCH_COUNT', 3000)
const PARALLEL = envInt('BENCH_PARALLEL', 2)
const CONCURRENCY = 16

const WORKER = fileURLToPath(new URL('./support/instructions-worker.ts', import.meta.url))
const ALL_KINDS: readonly { readonly kind: InstructionKind; readonly name: string }[] = [
  { kind: 'plain', name: 'plain' },
  { kind: 'plain-als', name: 'plain+ALS' },
  { kind: 'governed', name: 'governed' },
  { kind: 'governed-cold', name: 'governed, no warm' },
  { kind: 'deadline', name: 'deadline' },
  { kind: 'telemetry-on', name: 'telemetry on' },
]
const KINDS = selectedKinds(process.env['BENCH_KINDS'])
/** The issues' throughput targets, as the work ratios a client-bound service would need to meet them. */
const TARGETS: readonly { readonly kind: InstructionKind; readonly base: InstructionKind; readonly throughput: number; readonly issue: string }[] = [
  { kind: 'governed', base: 'plain', throughput: 0.98, issue: 'pass-through' },
  { kind: 'deadline', base: 'plain', throughput: 0.95, issue: '#3 deadline' },
  { kind: 'telemetry-on', base: 'governed', throughput: 0.97, issue: '#5 telemetry' },
]

interface Counted {
  readonly runtime: NodeRuntime
  readonly kind: InstructionKind
  instructions?: number
}

runBench('instructions', async (server) => {
  if (spawnSync('valgrind', ['--version']).status !== 0) throw new Error('valgrind is not installed (Debian: apt-get install valgrind)')
  if (spawnSync('callgrind_control', ['--version']).error) throw new Error('callgrind_control (valgrind) is not on the PATH')
  const runtimes = nodeRuntimes()
  const workDir = mkdtempSync(join(tmpdir(), 'pg-governor-bench-instructions-'))
  const jobs: Counted[] = runtimes.flatMap((runtime) => KINDS.map(({ kind }) => ({ runtime, kind })))
  console.log(
    `select 1 at concurrency ${CONCURRENCY}, pool max 16; instructions counted by callgrind (--single-threaded V8) over ${fmtInt(COUNT)} queries after ${fmtInt(WARMUP)} uncounted; ${jobs.length} counted runs, ${PARALLEL} at a time`,
  )
  for (const runtime of runtimes) console.log(`  ${runtime.label}: ${runtime.version}${runtime.execArgv.length ? ` ${runtime.execArgv.join(' ')}` : ''}`)
  try {
    let next = 0
    let done = 0
    const lane = async (): Promise<void> => {
      while (next < jobs.length) {
        const job = jobs[next++] as Counted
        job.instructions = await countInstructions(job, server.url, join(workDir, `callgrind.${next}`))
        process.stdout.write(`\r  counted ${++done}/${jobs.length}`)
      }
    }
    await Promise.all(Array.from({ length: PARALLEL }, lane))
    process.stdout.write('\n')
  } finally {
    rmSync(workDir, { recursive: true, force: true })
  }

  const perQuery = (runtime: NodeRuntime, kind: InstructionKind): number =>
    (jobs.find((j) => j.runtime === runtime && j.kind === kind)?.instructions ?? NaN) / COUNT
  const checks: Check[] = []
  const rows: Record<string, unknown>[] = []
  for (const runtime of runtimes) {
    const plain = perQuery(runtime, 'plain')
    printTable(
      `${runtime.label} (${runtime.version}): client instructions per query`,
      ['setup', 'instructions/query', 'vs plain', 'added to plain'],
      KINDS.map(({ kind, name }) => {
        const value = perQuery(runtime, kind)
        rows.push({ runtime: runtime.label, version: runtime.version, kind, instructionsPerQuery: value, ratioVsPlain: value / plain })
        return [name, fmtInt(value), fmt(value / plain, 3), kind === 'plain' ? '-' : fmtInt(value - plain)]
      }),
    )
    for (const target of TARGETS) {
      if (!KINDS.some((k) => k.kind === target.kind) || !KINDS.some((k) => k.kind === target.base)) continue
      const ratio = perQuery(runtime, target.kind) / perQuery(runtime, target.base)
      checks.push(check(`${runtime.label} ${target.issue}: ${target.kind}/${target.base} instructions`, ratio, '<=', Number((1 / target.throughput).toFixed(3)), 'x'))
    }
  }
  printChecks('work ratios a client-bound service needs for the throughput targets (1 / target)', checks)
  const path = writeResults('instructions', {
    bench: 'instructions',
    machine: machine(),
    server: { version: server.version, source: server.source },
    library: governorLabel(),
    settings: { warmup: WARMUP, count: COUNT, concurrency: CONCURRENCY, parallel: PARALLEL },
    knobs: knobs(['BENCH_NODES', 'BENCH_KINDS', 'BENCH_WARMUP_COUNT', 'BENCH_COUNT', 'BENCH_PARALLEL', 'PG_BENCH_URL']),
    runs: jobs.map((j) => ({ runtime: j.runtime.label, kind: j.kind, count: COUNT, instructions: j.instructions })),
    results: rows,
    checks,
  })
  console.log(`\nfigures written to ${path}`)
  return { allPassed: checks.every((c) => c.pass) }
})

/** The setups to count: all, or those BENCH_KINDS lists (comma-separated kinds). */
function selectedKinds(spec: string | undefined): readonly { readonly kind: InstructionKind; readonly name: string }[] {
  if (spec === undefined || spec.trim() === '') return ALL_KINDS
  const wanted = spec.split(',').map((s) => s.trim())
  for (const kind of wanted) {
    if (!ALL_KINDS.some((k) => k.kind === kind)) throw new Error(`BENCH_KINDS: unknown kind ${JSON.stringify(kind)}; known: ${ALL_KINDS.map((k) => k.kind).join(', ')}`)
  }
  return ALL_KINDS.filter((k) => wanted.includes(k.kind))
}

/**
 * Runs the worker once under callgrind, instrumentation on only while it runs
 * its counted queries, and returns the instructions counted (every thread).
 */
function countInstructions(job: Counted, url: string, outFile: string): Promise<number> {
  const args = [
    '--tool=callgrind',
    '--instr-atstart=no',
    `--callgrind-out-file=${outFile}`,
    // V8 writes machine code at run time.
    '--smc-check=all-non-file',
    job.runtime.execPath,
    '--single-threaded',
    ...job.runtime.execArgv,
    ...process.execArgv,
    WORKER,
    url,
    job.kind,
    String(WARMUP),
    String(COUNT),
    String(CONCURRENCY),
  ]
  const label = `${job.runtime.label} ${job.kind}`
  return new Promise((resolve, reject) => {
    const child = spawn('valgrind', args, { stdio: ['pipe', 'pipe', 'pipe'] })
    let stderr = ''
    let stdout = ''
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString()
      // valgrind runs the program in its own process: the child's pid is the worker's.
      const toggle = (on: boolean): void => {
        const result = spawnSync('callgrind_control', ['-i', on ? 'on' : 'off', String(child.pid)], { encoding: 'utf8' })
        if (result.status !== 0) child.kill()
      }
      if (stdout.includes('ready\n')) {
        stdout = stdout.replace('ready\n', '')
        toggle(true)
        child.stdin.write('go\n')
      }
      if (stdout.includes('done\n')) {
        stdout = stdout.replace('done\n', '')
        toggle(false)
        child.stdin.end('exit\n')
      }
    })
    child.on('error', reject)
    child.on('exit', (code) => {
      const collected = /Collected\s*:\s*(\d+)/.exec(stderr)?.[1]
      if (code !== 0 || !collected) reject(new Error(`${label}: valgrind exited ${code}\n${stderr.split('\n').slice(-20).join('\n')}`))
      else resolve(Number(collected))
    })
  })
}
