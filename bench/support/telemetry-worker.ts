/**
 * A child process that runs one setup of bench/telemetry.ts (see
 * telemetry-setup.ts): `select 1` through Kysely's PostgresDialect, or
 * through GovernedPostgresDialect with or without its metrics and logs.
 *
 * With metrics on, the worker scrapes `registry.metrics()` every `scrapeMs`
 * as Prometheus would: the timer runs for the worker's whole life, at a fixed
 * phase, and a tick scrapes only while a run is in progress (so that a scrape
 * never steals CPU from another setup's run); a scrape still pending when the
 * next tick comes makes that tick skip.
 */
import { readFileSync } from 'node:fs'
import pino from 'pino'
import { Registry } from 'prom-client'
import { governedDb, plainDb, select1, type PlainDb } from './dialects.js'
import { serveParent } from './worker-channel.js'
import { closedLoop } from './load.js'
import { loadGovernorWithPrometheus } from './telemetry-lib.js'
import type { ScrapeStats, TelemetryKind, TelemetryOptions, TelemetryReply, TelemetryRequest, TelemetryTotals } from './telemetry-setup.js'

let db: PlainDb | undefined
let op: (() => Promise<unknown>) | undefined
let registry: Registry | undefined
let destination: ReturnType<typeof pino.destination> | undefined
let logger: pino.Logger | undefined
let logFile: string | undefined
let scrapeTimer: NodeJS.Timeout | undefined
let running = false
let scraping = false
let scrape: { scrapes: number; totalMs: number; maxMs: number; bytes: number } = { scrapes: 0, totalMs: 0, maxMs: 0, bytes: 0 }
let scrapesAllTold = 0

async function init(kind: TelemetryKind, options: TelemetryOptions): Promise<string> {
  if (kind === 'plain') {
    db = plainDb(options.url, options.poolMax)
    op = select1(db.db)
    return 'ready'
  }
  const { governor, prometheus, label, prometheusFile } = await loadGovernorWithPrometheus()
  const withLogs = kind === 'on' || kind === 'logging-only'
  const withMetrics = kind === 'on' || kind === 'metrics-only'
  if (withLogs) {
    logFile = options.logFile
    // A real file, written asynchronously by sonic-boom, as a production pino setup does.
    destination = pino.destination({ dest: options.logFile, sync: false, mkdir: true })
    logger = pino({ level: 'info', base: { bench: 'telemetry', kind } }, destination)
    // One line, to show that the destination does write (a query logs nothing below slowQueryMs).
    logger.info({ slowQueryMs: options.slowQueryMs }, 'telemetry bench worker started')
  }
  const governed = governedDb(governor, options.url, options.poolMax, withLogs ? { logger, logging: { slowQueryMs: options.slowQueryMs } } : {})
  db = governed
  op = select1(governed.db)
  if (withMetrics) {
    const reg = new Registry()
    registry = reg
    prometheus.registerPrometheusMetrics(governed.dialect, { registry: reg, poolName: 'bench' })
    scrapeTimer = setInterval(() => {
      if (!running || scraping) return
      scraping = true
      const t0 = performance.now()
      reg.metrics().then(
        (text) => {
          const ms = performance.now() - t0
          scrape.scrapes++
          scrape.totalMs += ms
          scrape.maxMs = Math.max(scrape.maxMs, ms)
          scrape.bytes = text.length
          scrapesAllTold++
          scraping = false
        },
        (error: unknown) => {
          scraping = false
          console.error('[telemetry worker] scrape failed:', error)
        },
      )
    }, options.scrapeMs)
  }
  return withMetrics ? `${label}; prometheus from ${prometheusFile}` : label
}

async function metricTotal(name: string, suffix?: string): Promise<number | undefined> {
  const metric = registry?.getSingleMetric(name)
  if (!metric) return undefined
  const data = (await metric.get()) as { values: readonly { value: number; metricName?: string }[] }
  return data.values.filter((v) => suffix === undefined || v.metricName === `${name}${suffix}`).reduce((sum, v) => sum + v.value, 0)
}

async function closeLogger(): Promise<Pick<TelemetryTotals, 'logBytes' | 'logLines' | 'logLevels'>> {
  if (!logger || !destination || !logFile) return {}
  const dest = destination
  await new Promise<void>((resolve) => logger?.flush(() => resolve()))
  await new Promise<void>((resolve) => {
    dest.once('close', () => resolve())
    dest.end()
  })
  const text = readFileSync(logFile, 'utf8')
  const lines = text.split('\n').filter((line) => line.length > 0)
  const levels: Record<string, number> = {}
  for (const line of lines) {
    const level = String((JSON.parse(line) as { level?: unknown }).level)
    const name = pino.levels.labels[Number(level)] ?? level
    levels[name] = (levels[name] ?? 0) + 1
  }
  return { logBytes: Buffer.byteLength(text), logLines: lines.length, logLevels: levels }
}

async function close(): Promise<TelemetryTotals> {
  if (scrapeTimer) clearInterval(scrapeTimer)
  const totals: TelemetryTotals = registry
    ? {
        queriesCounted: await metricTotal('pg_governor_queries_total'),
        durationsObserved: await metricTotal('db_client_operation_duration_seconds', '_count'),
        scrapes: scrapesAllTold,
      }
    : {}
  await db?.db.destroy()
  return { ...totals, ...(await closeLogger()) }
}

serveParent<TelemetryRequest, TelemetryReply>(
  async (message) => {
    switch (message.type) {
      case 'init': {
        const { type: _type, kind, ...options } = message
        return { type: 'ready', label: await init(kind, options) }
      }
      case 'run': {
        if (!op) throw new Error('not initialised')
        scrape = { scrapes: 0, totalMs: 0, maxMs: 0, bytes: 0 }
        running = true
        try {
          const result = await closedLoop(op, message.concurrency, message.durationMs)
          return { type: 'result', result, scrape: { ...scrape } satisfies ScrapeStats }
        } finally {
          running = false
        }
      }
      case 'close':
        return { type: 'closed', totals: await close() }
    }
  },
  () => {
    if (scrapeTimer) clearInterval(scrapeTimer)
    return db?.db.destroy() ?? Promise.resolve()
  },
)
