import { readFileSync } from 'node:fs'
import { sql } from 'kysely'
import { Registry } from 'prom-client'
import { afterAll, describe, expect, it } from 'vitest'
import { withQueryContext } from '../../src/index.js'
import { METRIC_NAMES, registerPrometheusMetrics } from '../../src/telemetry/prometheus-metrics.js'
import { activeWithTag, governed, rejectionOf, waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()
const registry = new Registry()
const { db, dialect, pool } = governed(
  database,
  { max: 2 },
  { policies: { payment: { criticality: 'critical' } }, admission: { utilisationThresholds: { sheddable: 0.5 }, feasibility: false } },
)
registerPrometheusMetrics(dialect, { registry, poolName: 'orders' })
afterAll(() => db.destroy())

async function value(name: string, labels: Record<string, string>): Promise<number | undefined> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name)
  const found = (metric?.values as { labels: Record<string, string | number>; value: number; metricName?: string }[] | undefined)?.find(
    (entry) => (entry.metricName === undefined || entry.metricName === name) && Object.entries(labels).every(([key, v]) => String(entry.labels[key]) === v),
  )
  return found?.value
}

async function histogramCount(name: string, labels: Record<string, string>): Promise<number | undefined> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name)
  const entry = (metric?.values as { labels: Record<string, string>; value: number; metricName?: string }[] | undefined)?.find(
    (e) => e.metricName === `${name}_count` && Object.entries(labels).every(([key, v]) => e.labels[key] === v),
  )
  return entry?.value
}

function holder(seconds: number): Promise<unknown> {
  return withQueryContext({ criticality: 'critical_plus' }, () => sql`select pg_sleep(${seconds})`.execute(db))
}

describe('Prometheus metrics after a scripted workload', () => {
  it('counts every outcome, cancel, shed and timeout exactly, and computes the gauges when scraped', async () => {
    const sets: number[] = []
    dialect.events.on('statementTimeout', () => sets.push(1))
    // 5 ok in a registered domain.
    for (let i = 0; i < 5; i++) await withQueryContext({ domain: 'payment' }, () => sql`select 1`.execute(db))
    // 1 error in an unregistered domain: the label is bounded to 'other'.
    expect((await rejectionOf(withQueryContext({ domain: 'adhoc' }, () => sql`select 1 / 0`.execute(db)))).code).toBe('22012')
    // 1 deadline exceeded while running, 1 canceled while running: two confirmed backend cancels.
    await rejectionOf(withQueryContext({ timeoutMs: 150 }, () => sql`select pg_sleep(5)`.execute(db)))
    await waitFor('the first cancel to settle', async () => dialect.poolStats().permits === 0)
    const controller = new AbortController()
    const aborted = withQueryContext({ signal: controller.signal }, () => sql`select pg_sleep(5) as metrics_abort`.execute(db))
    await waitFor('the query to run', async () => (await activeWithTag(database, 'metrics_abort')).length === 1)
    controller.abort()
    await rejectionOf(aborted)
    await waitFor('the cancels to settle', async () => dialect.poolStats().permits === 0)
    // 1 shed: one of two connections busy is utilisation 0.5, the sheddable threshold here.
    const first = holder(0.6)
    await waitFor('one connection in use', async () => dialect.poolStats().used === 1)
    expect((await rejectionOf(withQueryContext({ criticality: 'sheddable' }, () => sql`select 1`.execute(db)))).code).toBe('LOAD_SHED')
    // 1 acquire timeout: both connections busy, a 100 ms budget expires in the queue.
    const second = holder(0.6)
    await waitFor('two connections in use', async () => dialect.poolStats().used === 2)
    expect((await rejectionOf(withQueryContext({ timeoutMs: 100 }, () => sql`select 1`.execute(db)))).phase).toBe('waiting')
    await Promise.all([first, second])
    await waitFor('the pool to rest', async () => dialect.poolStats().permits === 0)

    const q = METRIC_NAMES.queries
    const orders = { pool_name: 'orders' }
    expect(await value(q, { ...orders, outcome: 'ok', criticality: 'critical', domain: 'payment' })).toBe(5)
    expect(await value(q, { ...orders, outcome: 'error', criticality: 'critical', domain: 'other' })).toBe(1)
    expect(await value(q, { ...orders, outcome: 'deadline_exceeded', criticality: 'critical', domain: 'none' })).toBe(2)
    expect(await value(q, { ...orders, outcome: 'canceled', criticality: 'critical', domain: 'none' })).toBe(1)
    expect(await value(q, { ...orders, outcome: 'shed', criticality: 'sheddable', domain: 'none' })).toBe(1)
    expect(await value(q, { ...orders, outcome: 'ok', criticality: 'critical_plus', domain: 'none' })).toBe(2)
    expect(await value(METRIC_NAMES.sheds, { ...orders, reason: 'utilisation', criticality: 'sheddable' })).toBe(1)
    expect(await value(METRIC_NAMES.sheds, { ...orders, reason: 'queue', criticality: 'sheddable' })).toBe(0)
    expect(await value(METRIC_NAMES.timeouts, orders)).toBe(1)
    expect(await value(METRIC_NAMES.cancels, { ...orders, method: 'backend', result: 'confirmed' })).toBe(2)
    expect(await value(METRIC_NAMES.cancels, { ...orders, method: 'protocol', result: 'unconfirmed' })).toBe(0)
    expect(await value(METRIC_NAMES.statementTimeoutSets, { ...orders, scope: 'session' })).toBe(sets.length)
    // 10 statements ran: 5 ok, 1 error, 2 stopped, 2 holders; each also acquired and released a connection.
    expect(await histogramCount(METRIC_NAMES.operationDuration, orders)).toBe(10)
    expect(await histogramCount(METRIC_NAMES.waitTime, orders)).toBe(10)
    expect(await histogramCount(METRIC_NAMES.useTime, orders)).toBe(10)
    expect(await histogramCount(METRIC_NAMES.cancelDuration, { ...orders, method: 'backend' })).toBe(2)
    expect(await histogramCount(METRIC_NAMES.createTime, orders)).toBe(pool.totalCount)
    // The text exposition Prometheus scrapes says the same.
    const text = await registry.metrics()
    expect(text).toContain(`${METRIC_NAMES.operationDuration}_count{pool_name="orders"} 10`)
    expect(text).toContain(`${METRIC_NAMES.operationDuration}_bucket{le="+Inf",pool_name="orders"} 10`)
    expect(text).toContain(`${METRIC_NAMES.queries}{pool_name="orders",outcome="ok",criticality="critical",domain="payment"} 5`)

    // Gauges are computed at scrape time from the pool itself.
    // Idle counts connections kept warm by the dialect as well as those idle in pg-pool.
    expect(dialect.poolStats().idle).toBe(pool.totalCount)
    expect(await value(METRIC_NAMES.connectionCount, { ...orders, state: 'idle' })).toBe(pool.totalCount)
    expect(await value(METRIC_NAMES.connectionCount, { ...orders, state: 'used' })).toBe(0)
    expect(await value(METRIC_NAMES.connectionMax, orders)).toBe(2)
    expect(await value(METRIC_NAMES.pendingRequests, orders)).toBe(0)
    expect(await value(METRIC_NAMES.utilisation, orders)).toBe(0)
    expect(await value(METRIC_NAMES.sheddingLevel, orders)).toBe(0)
    expect(await value(METRIC_NAMES.circuitState, { ...orders, state: 'closed' })).toBe(1)
    expect(await value(METRIC_NAMES.circuitState, { ...orders, state: 'open' })).toBe(0)
    const busy = holder(0.3)
    await waitFor('one in use', async () => dialect.poolStats().used === 1)
    expect(await value(METRIC_NAMES.connectionCount, { ...orders, state: 'used' })).toBe(1)
    expect(await value(METRIC_NAMES.utilisation, orders)).toBe(0.5)
    expect(await value(METRIC_NAMES.sheddingLevel, orders)).toBe(1)
    await busy
  })

  it('refuses a second pool of the same name in one registry', () => {
    expect(() => registerPrometheusMetrics(dialect, { registry, poolName: 'orders' })).toThrow(/already reports/)
    expect(() => registerPrometheusMetrics(dialect, { registry, poolName: 'bad name' })).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }))
  })

  it('emits every metric the Grafana dashboard and the alert rules use', async () => {
    const emitted = new Set((await registry.getMetricsAsJSON()).map((metric) => metric.name))
    for (const file of ['ops/grafana-dashboard.json', 'ops/prometheus-alerts.yml']) {
      const text = readFileSync(new URL(`../../${file}`, import.meta.url), 'utf8')
      const used = new Set(
        [...text.matchAll(/\b((?:db_client|pg_governor)_[a-z_]+)\b/g)].map((match) => {
          const name = match[1] as string
          // A histogram's series carry _bucket/_count/_sum; db_client_connection_count is a gauge of its own.
          return emitted.has(name) ? name : name.replace(/_(bucket|count|sum)$/, '')
        }),
      )
      expect(used.size).toBeGreaterThanOrEqual(5)
      for (const name of used) expect(emitted, `${file} uses ${name}`).toContain(name)
    }
  })
})
