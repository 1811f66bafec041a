import { fmt, fmtInt } from './format.js'
import { median, quantile, sortedCopy, summarize } from './stats.js'

/** One way of running the measured operation. */
export interface Setup {
  readonly name: string
  /** One closed-loop run of the setup's operation. */
  run(concurrency: number, durationMs: number): Promise<RunResult>
}

/** A setup that runs `op` in this process. */
export function inProcessSetup(name: string, op: () => Promise<unknown>): Setup {
  return { name, run: (concurrency, durationMs) => closedLoop(op, concurrency, durationMs) }
}

/** What one closed-loop run measured. */
export interface RunResult {
  readonly ops: number
  readonly errors: number
  readonly elapsedMs: number
  readonly throughput: number
  readonly p50: number
  readonly p99: number
  /** User + system CPU time of this process per operation, in microseconds (the client-side cost, less sensitive to a noisy neighbour than ops/s). */
  readonly cpuUsPerOp: number
  readonly firstError?: string
}

/**
 * Closed loop: `concurrency` workers each run `op` back to back until
 * `durationMs` has passed. Latency is from the call to the settlement, in ms.
 * A worker whose operation fails stops (the error is counted and reported).
 */
export async function closedLoop(op: () => Promise<unknown>, concurrency: number, durationMs: number): Promise<RunResult> {
  const latencies: number[] = []
  let errors = 0
  let firstError: string | undefined
  const cpuBefore = process.cpuUsage()
  const startedAt = performance.now()
  const endAt = startedAt + durationMs
  const worker = async (): Promise<void> => {
    while (performance.now() < endAt) {
      const t0 = performance.now()
      try {
        await op()
        latencies.push(performance.now() - t0)
      } catch (error) {
        errors++
        firstError ??= error instanceof Error ? `${error.name}: ${error.message}` : String(error)
        // `select 1` does not fail: a failing setup is broken, and spinning on it would measure nothing.
        return
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  const elapsedMs = performance.now() - startedAt
  const cpu = process.cpuUsage(cpuBefore)
  const summary = summarize(latencies)
  return {
    ops: latencies.length,
    errors,
    elapsedMs,
    throughput: (latencies.length / elapsedMs) * 1000,
    p50: summary.p50,
    p99: summary.p99,
    cpuUsPerOp: (cpu.user + cpu.system) / Math.max(1, latencies.length + errors),
    ...(firstError === undefined ? {} : { firstError }),
  }
}

/** Per-setup figures over the rounds of one concurrency. */
export interface SetupRounds {
  readonly name: string
  readonly rounds: RunResult[]
  readonly medianThroughput: number
  readonly medianP50: number
  readonly medianP99: number
  readonly medianCpuUsPerOp: number
  readonly errors: number
}

/**
 * Warms every setup up, then runs `rounds` rounds in which every setup runs
 * once; the order rotates each round so that no setup always goes first (or
 * always follows the same neighbour) on a noisy machine.
 */
export async function alternatingRounds(
  setups: readonly Setup[],
  options: { readonly concurrency: number; readonly rounds: number; readonly roundMs: number; readonly warmupMs: number; readonly onRound?: (round: number) => void },
): Promise<SetupRounds[]> {
  const { concurrency, rounds, roundMs, warmupMs } = options
  for (const setup of setups) await setup.run(concurrency, warmupMs)
  const results = setups.map(() => [] as RunResult[])
  for (let round = 0; round < rounds; round++) {
    for (let k = 0; k < setups.length; k++) {
      const index = (round + k) % setups.length
      results[index]?.push(await (setups[index] as Setup).run(concurrency, roundMs))
    }
    options.onRound?.(round)
  }
  return setups.map((setup, i) => {
    const list = results[i] ?? []
    return {
      name: setup.name,
      rounds: list,
      medianThroughput: median(list.map((r) => r.throughput)),
      medianP50: median(list.map((r) => r.p50)),
      medianP99: median(list.map((r) => r.p99)),
      medianCpuUsPerOp: median(list.map((r) => r.cpuUsPerOp)),
      errors: list.reduce((sum, r) => sum + r.errors, 0),
    }
  })
}

/** Per-round a/b, pairing round i of `a` with round i of `b` (they ran within one round of each other). */
export function pairedRatios(a: SetupRounds, b: SetupRounds): number[] {
  return a.rounds.map((r, i) => r.throughput / (b.rounds[i]?.throughput ?? NaN))
}

/** Median over rounds of a/b (see {@link pairedRatios}): drift of the machine between rounds cancels out. */
export function pairedRatio(a: SetupRounds, b: SetupRounds): number {
  return median(pairedRatios(a, b))
}

/** Median and interquartile range of the paired ratios, for a verdict that shows its own noise. */
export function pairedRatioSpread(a: SetupRounds, b: SetupRounds): { readonly median: number; readonly p25: number; readonly p75: number } {
  const sorted = sortedCopy(pairedRatios(a, b))
  return { median: median([...sorted]), p25: quantile(sorted, 0.25), p75: quantile(sorted, 0.75) }
}

/** Column headers of {@link medianCells}. */
export const MEDIAN_HEADERS = ['setup', 'ops/s', 'p50 ms', 'p99 ms', 'client CPU us/op', 'errors'] as const

/** The medians every throughput table starts with, for one setup. */
export function medianCells(r: SetupRounds): (string | number)[] {
  return [r.name, fmtInt(r.medianThroughput), fmt(r.medianP50, 3), fmt(r.medianP99, 3), fmt(r.medianCpuUsPerOp, 1), r.errors]
}
