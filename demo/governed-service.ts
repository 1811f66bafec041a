/**
 * The service the way pg-governor wants it written: GovernedPostgresDialect,
 * and each route wrapped in `governedHandler`, which reads X-Request-Timeout,
 * runs the handler in a query context with the request's deadline,
 * criticality and domain, cancels its queries on the server when the client
 * disconnects, and answers 504 (deadline) / 503 + Retry-After (shed). Plus
 * GET /metrics from a prom-client registry.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Kysely } from 'kysely'
import pg from 'pg'
import { Registry } from 'prom-client'
// In an application: from 'pg-governor' and 'pg-governor/prometheus'.
import { createMetricsHandler, governedHandler, GovernedPostgresDialect } from '../src/index.js'
import { registerPrometheusMetrics } from '../src/telemetry/prometheus-metrics.js'
import { POOL_MAX, ROUTES } from './config.js'
import type { Database } from './database.js'
import { listen, sendJson } from './http-server.js'
import { findOrder, matchRoute, requestIdOf, salesReport } from './routes.js'
import type { DemoService } from './service.js'

export interface GovernedService extends DemoService {
  readonly metricsUrl: string
}

export async function startGovernedService(databaseUrl: string): Promise<GovernedService> {
  // The only change from Kysely's PostgresDialect: the class name, plus governance options.
  const dialect = new GovernedPostgresDialect({
    pool: new pg.Pool({ connectionString: databaseUrl, max: POOL_MAX, application_name: 'pg-governor demo (governed)' }),
    policies: {
      checkout: { criticality: 'critical' },
      report: { criticality: 'sheddable' },
    },
  })
  const db = new Kysely<Database>({ dialect })

  const registry = new Registry()
  registerPrometheusMetrics(dialect, { registry, poolName: 'demo' })
  const metrics = createMetricsHandler(registry)

  let cancels = 0
  dialect.events.on('cancel', () => cancels++)

  const order = governedHandler(
    { defaultTimeoutMs: ROUTES.critical.timeoutMs, maxTimeoutMs: 2_000, criticality: 'critical', domain: ROUTES.critical.domain },
    async (req, res) => {
      const route = matchRoute(req)
      const found = route?.name === 'order' ? await findOrder(db, route.orderId, requestIdOf(req)) : undefined
      if (found) sendJson(res, 200, found)
      else sendJson(res, 404, { error: { code: 'NOT_FOUND' } })
    },
  )
  const report = governedHandler(
    { defaultTimeoutMs: ROUTES.sheddable.timeoutMs, maxTimeoutMs: 5_000, criticality: 'sheddable', domain: ROUTES.sheddable.domain },
    async (req, res) => {
      sendJson(res, 200, await salesReport(db, requestIdOf(req)))
    },
  )

  const server = await listen((req: IncomingMessage, res: ServerResponse) => {
    const route = matchRoute(req)
    if (route?.name === 'order') void order(req, res)
    else if (route?.name === 'report') void report(req, res)
    else if (route?.name === 'metrics') void metrics(req, res)
    else sendJson(res, 404, { error: { code: 'NOT_FOUND' } })
  })

  return {
    name: 'pg-governor',
    url: server.url,
    metricsUrl: `${server.url}/metrics`,
    gauge: () => {
      const stats = dialect.poolStats()
      return {
        used: stats.used,
        idle: stats.idle,
        max: stats.max,
        waiting: stats.waiting,
        utilisation: stats.utilisation,
        shedding: stats.sheddingLevel ?? 'none',
        circuit: stats.circuit,
        cancels,
      }
    },
    close: async () => {
      await server.close()
      await db.destroy()
    },
  }
}
