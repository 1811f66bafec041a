import { Counter, Gauge, Histogram, register as defaultRegistry, type Registry } from 'prom-client'
import { CRITICALITIES } from '../context/criticality.js'
import type { GovernedPostgresDialect } from '../dialect/governed-postgres-dialect.js'
import { InvalidOptionError } from '../errors/invalid-option-error.js'

/**
 * Options of {@link registerPrometheusMetrics}.
 *
 * @example
 * ```ts
 * const options: PrometheusMetricsOptions = { registry: new Registry(), poolName: 'orders' }
 * ```
 */
export interface PrometheusMetricsOptions {
  /** Where the metrics go. Default: prom-client's default registry. */
  readonly registry?: Registry | undefined
  /** The `pool_name` label; unique per registry. Default `default`. */
  readonly poolName?: string | undefined
}

/** What {@link registerPrometheusMetrics} returns. */
export interface PrometheusMetricsHandle {
  /** Stops updating and reporting this pool (the metrics stay registered for other pools). */
  unregister(): void
}

/** Seconds; the OpenTelemetry recommendation for database client durations, plus finer steps at the low end. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/** Names of every metric this module emits, for dashboards and their tests. */
export const METRIC_NAMES = Object.freeze({
  connectionCount: 'db_client_connection_count',
  connectionMax: 'db_client_connection_max',
  pendingRequests: 'db_client_connection_pending_requests',
  timeouts: 'db_client_connection_timeouts_total',
  waitTime: 'db_client_connection_wait_time_seconds',
  useTime: 'db_client_connection_use_time_seconds',
  createTime: 'db_client_connection_create_time_seconds',
  operationDuration: 'db_client_operation_duration_seconds',
  queries: 'pg_governor_queries_total',
  cancels: 'pg_governor_cancels_total',
  cancelDuration: 'pg_governor_cancel_duration_seconds',
  statementTimeoutSets: 'pg_governor_statement_timeout_sets_total',
  sheds: 'pg_governor_sheds_total',
  utilisation: 'pg_governor_pool_utilisation',
  sheddingLevel: 'pg_governor_shedding_level',
  circuitState: 'pg_governor_circuit_state',
  leaks: 'pg_governor_leaks_total',
  poolErrors: 'pg_governor_pool_errors_total',
})

type Names = keyof typeof METRIC_NAMES

/** The metrics of one registry, shared by every pool reported into it. */
class MetricSet {
  readonly pools = new Map<string, GovernedPostgresDialect>()
  readonly counters: Record<'timeouts' | 'queries' | 'cancels' | 'statementTimeoutSets' | 'sheds' | 'leaks' | 'poolErrors', Counter<string>>
  readonly histograms: Record<'waitTime' | 'useTime' | 'createTime' | 'operationDuration' | 'cancelDuration', Histogram<string>>

  constructor(registry: Registry) {
    const registers = [registry]
    const pools = this.pools
    const stats = function* () {
      for (const [poolName, dialect] of pools) {
        try {
          yield { poolName, stats: dialect.poolStats() }
        } catch {
          // No Kysely instance uses the dialect yet: nothing to report.
        }
      }
    }
    const gauge = (name: Names, help: string, labelNames: string[], collect: (gauge: Gauge<string>) => void): void => {
      new Gauge({
        name: METRIC_NAMES[name],
        help,
        labelNames,
        registers,
        collect(this: Gauge<string>) {
          this.reset()
          collect(this)
        },
      })
    }
    gauge('connectionCount', 'Connections in the pool by state (OpenTelemetry db.client.connection.count).', ['pool_name', 'state'], (g) => {
      for (const { poolName, stats: s } of stats()) {
        g.set({ pool_name: poolName, state: 'idle' }, s.idle)
        g.set({ pool_name: poolName, state: 'used' }, s.used)
      }
    })
    gauge('connectionMax', 'The pool size limit (db.client.connection.max).', ['pool_name'], (g) => {
      for (const { poolName, stats: s } of stats()) g.set({ pool_name: poolName }, s.max)
    })
    gauge('pendingRequests', 'Callers waiting for a connection (db.client.connection.pending_requests).', ['pool_name'], (g) => {
      for (const { poolName, stats: s } of stats()) g.set({ pool_name: poolName }, s.waiting + s.pgPoolWaiting)
    })
    gauge('utilisation', '(connections in use + waiters) / max: what the shedding thresholds compare with.', ['pool_name'], (g) => {
      for (const { poolName, stats: s } of stats()) g.set({ pool_name: poolName }, s.utilisation)
    })
    gauge('sheddingLevel', 'How many criticality levels utilisation refuses now: 0 none, 1 sheddable, 2 up to sheddable_plus, 3 up to critical.', ['pool_name'], (g) => {
      for (const { poolName, stats: s } of stats()) {
        g.set({ pool_name: poolName }, s.sheddingLevel === undefined ? 0 : CRITICALITIES.length - CRITICALITIES.indexOf(s.sheddingLevel))
      }
    })
    gauge('circuitState', 'Circuit breaker state, one series per state set to 1 for the current one.', ['pool_name', 'state'], (g) => {
      for (const { poolName, stats: s } of stats()) {
        for (const state of ['closed', 'half_open', 'open'] as const) g.set({ pool_name: poolName, state }, s.circuit === state ? 1 : 0)
      }
    })
    const counter = (name: Names, help: string, labelNames: string[]): Counter<string> => new Counter({ name: METRIC_NAMES[name], help, labelNames, registers })
    this.counters = {
      timeouts: counter('timeouts', 'Callers whose deadline passed while waiting for a connection (db.client.connection.timeouts).', ['pool_name']),
      queries: counter('queries', 'Queries by outcome (ok, error, deadline_exceeded, canceled, shed), criticality and domain.', ['pool_name', 'outcome', 'criticality', 'domain']),
      cancels: counter('cancels', 'Server-side cancels by method (backend, protocol, kill) and result (confirmed, unconfirmed, failed).', ['pool_name', 'method', 'result']),
      statementTimeoutSets: counter('statementTimeoutSets', 'statement_timeout SETs sent, by scope (session, local).', ['pool_name', 'scope']),
      sheds: counter('sheds', 'Queries refused by admission, by reason and criticality.', ['pool_name', 'reason', 'criticality']),
      leaks: counter('leaks', 'Connections held longer than the leak detection threshold.', ['pool_name']),
      poolErrors: counter('poolErrors', "Errors pg-pool reported on idle clients (server restarts, killed backends).", ['pool_name']),
    }
    const histogram = (name: Names, help: string, labelNames: string[]): Histogram<string> =>
      new Histogram({ name: METRIC_NAMES[name], help, labelNames, buckets: DURATION_BUCKETS, registers })
    this.histograms = {
      waitTime: histogram('waitTime', 'Time to obtain a connection (db.client.connection.wait_time).', ['pool_name']),
      useTime: histogram('useTime', 'Time a connection was held (db.client.connection.use_time).', ['pool_name']),
      createTime: histogram('createTime', 'Time to open a new connection (db.client.connection.create_time).', ['pool_name']),
      operationDuration: histogram('operationDuration', 'Statement duration as the client saw it (db.client.operation.duration).', ['pool_name']),
      cancelDuration: histogram('cancelDuration', 'Time to deliver a server-side cancel.', ['pool_name', 'method']),
    }
  }
}

const metricSets = new WeakMap<Registry, MetricSet>()

/**
 * Reports a dialect's pool and governance into a prom-client registry: pool
 * gauges named after the OpenTelemetry conventions (computed when scraped,
 * not sampled), counters and histograms fed by the dialect's events. Label
 * values are bounded: `domain` is a registered policy domain, `none` or `other`.
 *
 * @example
 * ```ts
 * import { Registry } from 'prom-client'
 * import { registerPrometheusMetrics } from 'pg-governor/prometheus'
 *
 * const registry = new Registry()
 * registerPrometheusMetrics(dialect, { registry, poolName: 'orders' })
 * app.get('/metrics', async (_req, res) => res.type(registry.contentType).send(await registry.metrics()))
 * ```
 */
export function registerPrometheusMetrics(dialect: GovernedPostgresDialect, options: PrometheusMetricsOptions = {}): PrometheusMetricsHandle {
  const registry = options.registry ?? defaultRegistry
  const poolName = options.poolName ?? 'default'
  if (typeof poolName !== 'string' || !/^[A-Za-z0-9_.:-]{1,64}$/.test(poolName)) {
    throw new InvalidOptionError('poolName', `must be 1 to 64 letters, digits, '_', '.', ':' or '-'; got ${String(poolName)}`)
  }
  let set = metricSets.get(registry)
  if (!set) {
    set = new MetricSet(registry)
    metricSets.set(registry, set)
  }
  if (set.pools.has(poolName)) {
    throw new InvalidOptionError('poolName', `a pool named ${poolName} already reports into this registry`)
  }
  set.pools.set(poolName, dialect)
  const { counters, histograms } = set
  const pool = { pool_name: poolName }
  // Series start at zero, so that rate() and alerts see them before the first event.
  for (const counter of [counters.timeouts, counters.leaks, counters.poolErrors]) counter.inc(pool, 0)
  for (const scope of ['session', 'local']) counters.statementTimeoutSets.inc({ pool_name: poolName, scope }, 0)
  for (const criticality of CRITICALITIES) {
    for (const reason of ['utilisation', 'queue', 'deadline', 'circuit_open']) counters.sheds.inc({ pool_name: poolName, reason, criticality }, 0)
    for (const outcome of ['ok', 'error', 'deadline_exceeded', 'canceled', 'shed']) {
      counters.queries.inc({ pool_name: poolName, outcome, criticality, domain: 'none' }, 0)
    }
  }
  for (const method of ['backend', 'protocol', 'kill']) {
    for (const result of ['confirmed', 'unconfirmed', 'failed']) counters.cancels.inc({ pool_name: poolName, method, result }, 0)
  }
  const domainLabel = (domain: string | undefined): string => (domain === undefined ? 'none' : dialect.policies.has(domain) ? domain : 'other')
  const { events } = dialect
  const offs = [
    events.on('query', (event) => {
      counters.queries.inc({ pool_name: poolName, outcome: event.outcome, criticality: event.criticality, domain: domainLabel(event.domain) })
      if (event.phase === 'running') histograms.operationDuration.observe(pool, event.ranMs / 1000)
      else if (event.phase === 'waiting' && event.outcome === 'deadline_exceeded') counters.timeouts.inc(pool)
    }),
    events.on('acquire', (event) => {
      histograms.waitTime.observe(pool, event.waitedMs / 1000)
      if (event.createMs !== undefined) histograms.createTime.observe(pool, event.createMs / 1000)
    }),
    events.on('release', (event) => histograms.useTime.observe(pool, event.heldMs / 1000)),
    events.on('cancel', (event) => {
      const method = event.outcome?.method ?? 'backend'
      const result = event.outcome === undefined ? 'failed' : event.outcome.confirmed ? 'confirmed' : 'unconfirmed'
      counters.cancels.inc({ pool_name: poolName, method, result })
      if (event.outcome) histograms.cancelDuration.observe({ pool_name: poolName, method }, event.outcome.durationMs / 1000)
    }),
    events.on('statementTimeout', (event) => counters.statementTimeoutSets.inc({ pool_name: poolName, scope: event.local ? 'local' : 'session' })),
    events.on('shed', (event) => counters.sheds.inc({ pool_name: poolName, reason: event.reason, criticality: event.criticality })),
    events.on('leak', () => counters.leaks.inc(pool)),
    events.on('poolError', () => counters.poolErrors.inc(pool)),
  ]
  return {
    unregister() {
      for (const off of offs) off()
      set.pools.delete(poolName)
    },
  }
}
