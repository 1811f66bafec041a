/**
 * The setups of bench/telemetry.ts, each in a child process of its own
 * (bench/support/telemetry-worker.ts), driven over the IPC channel as
 * bench/support/isolated.ts drives bench/support/setup-worker.ts.
 */
import { fileURLToPath } from 'node:url'
import type { RunResult, Setup } from './load.js'
import { forkWorker } from './worker-channel.js'

/**
 * - plain          Kysely's PostgresDialect
 * - off            GovernedPostgresDialect, no metrics, no logger
 * - on             off + registerPrometheusMetrics (fresh Registry, scraped 1/s) + pino logger (file, async) with slowQueryMs
 * - metrics-only   off + the metrics and the scraper (diagnostic)
 * - logging-only   off + the logger (diagnostic)
 */
export type TelemetryKind = 'plain' | 'off' | 'on' | 'metrics-only' | 'logging-only'

export interface TelemetryOptions {
  readonly url: string
  readonly poolMax: number
  readonly slowQueryMs: number
  readonly scrapeMs: number
  /** Where the pino destination writes (a file under os.tmpdir()). */
  readonly logFile: string
}

export type TelemetryRequest =
  | ({ type: 'init'; kind: TelemetryKind } & TelemetryOptions)
  | { type: 'run'; concurrency: number; durationMs: number }
  | { type: 'close' }

/** What the scraper did during one run. */
export interface ScrapeStats {
  readonly scrapes: number
  readonly totalMs: number
  readonly maxMs: number
  readonly bytes: number
}

/** What the setup's telemetry recorded over its whole life, read at close. */
export interface TelemetryTotals {
  /** Sum of pg_governor_queries_total over every label set, when metrics are on. */
  readonly queriesCounted?: number
  /** db_client_operation_duration_seconds count, when metrics are on. */
  readonly durationsObserved?: number
  /** The log file after the logger was flushed and closed, when logging is on. */
  readonly logBytes?: number
  readonly logLines?: number
  readonly logLevels?: Record<string, number>
  /** Scrapes during the runs (warm-ups included), all told. */
  readonly scrapes?: number
}

export type TelemetryReply =
  | { type: 'ready'; label: string }
  | { type: 'result'; result: RunResult; scrape: ScrapeStats }
  | { type: 'closed'; totals: TelemetryTotals }
  | { type: 'error'; message: string }

export interface TelemetrySetup extends Setup {
  readonly kind: TelemetryKind
  /** Scrape figures of each run so far, warm-up first. */
  readonly scrapes: ScrapeStats[]
  /** Operations (ok or failed) run so far, warm-ups included. */
  readonly operations: () => number
  /** Closes the setup (flushing its logger) and returns what its telemetry recorded. */
  close(): Promise<TelemetryTotals>
}

const WORKER = fileURLToPath(new URL('./telemetry-worker.ts', import.meta.url))

/**
 * Forks a worker for one setup. The child inherits this process's execArgv
 * (the tsx loader) plus `extraExecArgv` (e.g. --cpu-prof); with `pin`, it
 * runs on the client's CPU (see cpu-pinning.ts).
 */
export async function telemetrySetup(
  name: string,
  kind: TelemetryKind,
  options: TelemetryOptions,
  extraExecArgv: readonly string[] = [],
  pin = false,
): Promise<TelemetrySetup> {
  const worker = forkWorker<TelemetryRequest, TelemetryReply>(name, WORKER, { execArgv: extraExecArgv, pin })
  await worker.ask({ type: 'init', kind, ...options })
  const scrapes: ScrapeStats[] = []
  let operations = 0
  let totals: TelemetryTotals | undefined
  return {
    name,
    kind,
    scrapes,
    operations: () => operations,
    async run(concurrency: number, durationMs: number): Promise<RunResult> {
      const reply = await worker.ask({ type: 'run', concurrency, durationMs })
      if (reply.type !== 'result') throw new Error(`${name} worker: unexpected ${reply.type}`)
      scrapes.push(reply.scrape)
      operations += reply.result.ops + reply.result.errors
      return reply.result
    },
    async close(): Promise<TelemetryTotals> {
      if (totals) return totals
      const reply = await worker.close({ type: 'close' }, 10_000)
      totals = reply?.type === 'closed' ? reply.totals : {}
      return totals
    },
  }
}
