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

/**
 * What {@link registerPrometheusMetrics} returns.
 *
 * @example
 * ```ts
 * const handle = registerPrometheusMetrics(dialect, { registry })
 * await db.destroy()
 * handle.unregister()
 * ```
 */
export interface PrometheusMetricsHandle {
  /** Stops updating and reporting this pool (the metrics stay registered for other pools). */
  unregister(): void
}

/** Seconds; the OpenTelemetry recommendation for database client durations, plus finer steps at the low end. */
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/**
 * Names of every metric this module emits, for dashboards and their tests.
 *
 * @example
 * ```ts
 * const rule = `rate(${METRIC_NAMES.sheds}[5m]) > 1`
 * ```
 */
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
  connectionCeiling: 'pg_governor_connection_ceiling',
  serverSaturation: 'pg_governor_server_saturation',
  capacityRefusals: 'pg_governor_capacity_refusals_total',
  retries: 'pg_governor_retries_total',
})

type Names = keyof typeof METRIC_NAMES

/**
 * One histogram series as plain numbers: what an event touches. prom-client's
 * observe() validates and hashes the label object and looks the bucket up by a
 * number-keyed property on every call (about 0.5 us, more with cold caches,
 * three times per query); this is an index loop and three additions.
 */
class HistogramCells {
  /** Per bucket, not cumulative; the last cell holds what is above the last bound. */
  readonly counts = new Float64Array(DURATION_BUCKETS.length + 1)
  sum = 0
  count = 0

  observe(seconds: number): void {
    let i = 0
    while (i < DURATION_BUCKETS.length && seconds > (DURATION_BUCKETS[i] as number)) i++
    this.counts[i] = (this.counts[i] as number) + 1
    this.sum += seconds
    this.count++
  }
}

/** One sample of the exposition, in the shape prom-client's own histograms hand to the Registry (series labels apart from `le`). */
interface HistogramSample {
  readonly labels: Record<string, string | number>
  readonly sharedLabels: Record<string, string>
  readonly value: number
  readonly metricName: string
  readonly exemplar?: null
}

/**
 * A prom-client Histogram whose series live in {@link HistogramCells}, read
 * only when the registry is scraped: same name, type, buckets and exposition
 * (`_bucket{le}`, `_sum`, `_count`) as prom-client's own. prom-client 15 builds
 * both the text exposition (Registry) and get() (JSON) from
 * getForPromString(), which this class replaces; the metrics test checks both.
 */
class BatchedHistogram extends Histogram<string> {
  readonly #name: string
  readonly #help: string
  readonly #series: { readonly key: string; readonly labels: Record<string, string>; readonly cells: HistogramCells }[] = []

  constructor(name: string, help: string, labelNames: string[], registers: Registry[]) {
    super({ name, help, labelNames, buckets: DURATION_BUCKETS, registers })
    this.#name = name
    this.#help = help
  }

  /** The cells of one label set (the same ones for the same labels, e.g. a pool registered again); call outside the query path. */
  cells(labels: Record<string, string>): HistogramCells {
    const key = JSON.stringify(Object.entries(labels).sort(([a], [b]) => (a < b ? -1 : 1)))
    const found = this.#series.find((series) => series.key === key)
    if (found) return found.cells
    const cells = new HistogramCells()
    this.#series.push({ key, labels, cells })
    return cells
  }

  async getForPromString(): Promise<{ name: string; help: string; type: 'histogram'; values: HistogramSample[]; aggregator: 'sum' }> {
    const values: HistogramSample[] = []
    for (const { labels, cells } of this.#series) {
      // As with prom-client's own: a series appears with its first observation, and goes with reset().
      if (cells.count === 0) continue
      let cumulative = 0
      DURATION_BUCKETS.forEach((le, i) => {
        cumulative += cells.counts[i] as number
        values.push({ labels: { le }, sharedLabels: labels, value: cumulative, metricName: `${this.#name}_bucket`, exemplar: null })
      })
      values.push({ labels: { le: '+Inf' }, sharedLabels: labels, value: cells.count, metricName: `${this.#name}_bucket`, exemplar: null })
      values.push({ labels: {}, sharedLabels: labels, value: cells.sum, metricName: `${this.#name}_sum` })
      values.push({ labels: {}, sharedLabels: labels, value: cells.count, metricName: `${this.#name}_count` })
    }
    return { name: this.#name, help: this.#help, type: 'histogram', values, aggregator: 'sum' }
  }

  override reset(): void {
    super.reset()
    // prom-client's constructor calls reset() before this class's fields exist.
    if (!(#series in this)) return
    for (const { cells } of this.#series) {
      cells.counts.fill(0)
      cells.sum = 0
      cells.count = 0
    }
  }
}

/** Query counts of one pool as plain numbers, handed to the counter when scraped. */
class QueryCells {
  /** outcome -> criticality -> domain label -> count since the last scrape */
  readonly #cells = new Map<string, Map<string, Map<string, { readonly labels: Record<string, string>; n: number }>>>()
  readonly #poolName: string

  constructor(poolName: string) {
    this.#poolName = poolName
  }

  inc(outcome: string, criticality: string, domain: string): void {
    let byCriticality = this.#cells.get(outcome)
    if (!byCriticality) this.#cells.set(outcome, (byCriticality = new Map()))
    let byDomain = byCriticality.get(criticality)
    if (!byDomain) byCriticality.set(criticality, (byDomain = new Map()))
    const cell = byDomain.get(domain)
    if (cell) cell.n++
    else byDomain.set(domain, { labels: { pool_name: this.#poolName, outcome, criticality, domain }, n: 1 })
  }

  flush(counter: Counter<string>): void {
    for (const byCriticality of this.#cells.values()) {
      for (const byDomain of byCriticality.values()) {
        for (const cell of byDomain.values()) {
          if (cell.n === 0) continue
          counter.inc(cell.labels, cell.n)
          cell.n = 0
        }
      }
    }
  }
}

/** The metrics of one registry, shared by every pool reported into it. */
class MetricSet {
  readonly pools = new Map<string, GovernedPostgresDialect>()
  /** Query counts accumulated per pool since the last scrape. */
  readonly queryCells = new Set<QueryCells>()
  readonly counters: Record<'timeouts' | 'queries' | 'cancels' | 'statementTimeoutSets' | 'sheds' | 'leaks' | 'poolErrors' | 'capacityRefusals' | 'retries', Counter<string>>
  readonly histograms: Record<'waitTime' | 'useTime' | 'createTime' | 'operationDuration' | 'cancelDuration', BatchedHistogram>

  constructor(registry: Registry) {
    const registers = [registry]
    const pools = this.pools
    const queryCells = this.queryCells
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
    gauge('connectionCeiling', 'Connections the server lets the pool reach: its max, or fewer after a refusal for capacity (53300).', ['pool_name'], (g) => {
      for (const { poolName, stats: s } of stats()) g.set({ pool_name: poolName }, s.ceiling)
    })
    gauge('serverSaturation', 'Sampled busy application backends / usable slots (fleet.saturation); 0 when not sampled.', ['pool_name'], (g) => {
      for (const { poolName, stats: s } of stats()) g.set({ pool_name: poolName }, s.serverSaturation)
    })
    const counter = (name: Names, help: string, labelNames: string[]): Counter<string> => new Counter({ name: METRIC_NAMES[name], help, labelNames, registers })
    this.counters = {
      timeouts: counter('timeouts', 'Callers whose deadline passed while waiting for a connection (db.client.connection.timeouts).', ['pool_name']),
      queries: new Counter({
        name: METRIC_NAMES.queries,
        help: 'Queries by outcome (ok, error, deadline_exceeded, canceled, shed), criticality and domain.',
        labelNames: ['pool_name', 'outcome', 'criticality', 'domain'],
        registers,
        collect: function (this: Counter<string>) {
          for (const cells of queryCells) cells.flush(this)
        },
      }),
      cancels: counter('cancels', 'Server-side cancels by method (backend, protocol, kill) and result (confirmed, unconfirmed, failed).', ['pool_name', 'method', 'result']),
      statementTimeoutSets: counter('statementTimeoutSets', 'statement_timeout SETs sent, by scope (session, local).', ['pool_name', 'scope']),
      sheds: counter('sheds', 'Queries refused by admission, by reason and criticality.', ['pool_name', 'reason', 'criticality']),
      leaks: counter('leaks', 'Connections held longer than the leak detection threshold.', ['pool_name']),
      poolErrors: counter('poolErrors', "Errors pg-pool reported on idle clients (server restarts, killed backends).", ['pool_name']),
      capacityRefusals: counter('capacityRefusals', 'New sessions the server refused for capacity (53300); callers waited instead of failing.', ['pool_name']),
      retries: counter(
        'retries',
        'Retry decisions after a retryable failure, by reason (connect_failed, cannot_connect_now, ...) and outcome (retried, waited, budget, deadline, attempts, circuit_open).',
        ['pool_name', 'reason', 'outcome'],
      ),
    }
    const histogram = (name: Names, help: string, labelNames: string[]): BatchedHistogram => new BatchedHistogram(METRIC_NAMES[name], help, labelNames, registers)
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
  for (const counter of [counters.timeouts, counters.leaks, counters.poolErrors, counters.capacityRefusals]) counter.inc(pool, 0)
  for (const scope of ['session', 'local']) counters.statementTimeoutSets.inc({ pool_name: poolName, scope }, 0)
  for (const criticality of CRITICALITIES) {
    for (const reason of ['utilisation', 'queue', 'deadline', 'circuit_open']) counters.sheds.inc({ pool_name: poolName, reason, criticality }, 0)
    for (const outcome of ['ok', 'error', 'deadline_exceeded', 'canceled', 'shed']) {
      counters.queries.inc({ pool_name: poolName, outcome, criticality, domain: 'none' }, 0)
    }
  }
  for (const method of ['backend', 'protocol', 'kill', 'close']) {
    for (const result of ['confirmed', 'unconfirmed', 'failed']) counters.cancels.inc({ pool_name: poolName, method, result }, 0)
  }
  const domainLabel = (domain: string | undefined): string => (domain === undefined ? 'none' : dialect.policies.has(domain) ? domain : 'other')
  // Per-event work is plain numbers; prom-client sees them when scraped.
  const queries = new QueryCells(poolName)
  set.queryCells.add(queries)
  const operationDuration = histograms.operationDuration.cells(pool)
  const waitTime = histograms.waitTime.cells(pool)
  const createTime = histograms.createTime.cells(pool)
  const useTime = histograms.useTime.cells(pool)
  const cancelDuration = new Map(['backend', 'protocol', 'kill', 'close'].map((method) => [method, histograms.cancelDuration.cells({ pool_name: poolName, method })]))
  const { events } = dialect
  const offs = [
    events.on('query', (event) => {
      queries.inc(event.outcome, event.criticality, domainLabel(event.domain))
      if (event.phase === 'running') operationDuration.observe(event.ranMs / 1000)
      else if (event.phase === 'waiting' && event.outcome === 'deadline_exceeded') counters.timeouts.inc(pool)
    }),
    events.on('acquire', (event) => {
      waitTime.observe(event.waitedMs / 1000)
      if (event.createMs !== undefined) createTime.observe(event.createMs / 1000)
    }),
    events.on('release', (event) => useTime.observe(event.heldMs / 1000)),
    events.on('cancel', (event) => {
      const method = event.outcome?.method ?? 'backend'
      const result = event.outcome === undefined ? 'failed' : event.outcome.confirmed ? 'confirmed' : 'unconfirmed'
      counters.cancels.inc({ pool_name: poolName, method, result })
      if (event.outcome) cancelDuration.get(method)?.observe(event.outcome.durationMs / 1000)
    }),
    events.on('statementTimeout', (event) => counters.statementTimeoutSets.inc({ pool_name: poolName, scope: event.local ? 'local' : 'session' })),
    events.on('shed', (event) => counters.sheds.inc({ pool_name: poolName, reason: event.reason, criticality: event.criticality })),
    events.on('leak', () => counters.leaks.inc(pool)),
    events.on('poolError', () => counters.poolErrors.inc(pool)),
    events.on('capacity', (event) => {
      if (event.change === 'refused') counters.capacityRefusals.inc(pool)
    }),
    events.on('retry', (event) => counters.retries.inc({ pool_name: poolName, reason: event.reason, outcome: event.outcome })),
  ]
  return {
    unregister() {
      for (const off of offs) off()
      queries.flush(counters.queries)
      set.queryCells.delete(queries)
      set.pools.delete(poolName)
    },
  }
}
