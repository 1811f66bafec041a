/**
 * The same service the way most people write it today: Kysely's
 * PostgresDialect on a pg.Pool, plain async handlers, no deadline, no
 * AbortSignal. X-Request-Timeout is ignored, a client that disconnects goes
 * unnoticed, and when the pool is busy every request waits in pg-pool's queue
 * for as long as it takes.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import { POOL_MAX } from './config.js'
import type { Database } from './database.js'
import { listen, sendJson } from './http-server.js'
import { findOrder, matchRoute, requestIdOf, salesReport } from './routes.js'
import type { DemoService } from './service.js'

export interface PlainService extends DemoService {
  /** Requests queued in pg-pool right now. */
  queued(): number
  /** Resolves once pg-pool's queue is empty and every connection is idle again (or after `timeoutMs`). */
  drained(timeoutMs: number): Promise<boolean>
}

export async function startPlainService(databaseUrl: string): Promise<PlainService> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: POOL_MAX, application_name: 'pg-governor demo (plain)' })
  // node-postgres' advice: an idle client's error would otherwise crash the process.
  pool.on('error', (error) => console.error('pg pool error:', error.message))
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) })

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    try {
      const route = matchRoute(req)
      if (route?.name === 'order') {
        const found = await findOrder(db, route.orderId, requestIdOf(req))
        if (found) sendJson(res, 200, found)
        else sendJson(res, 404, { error: { code: 'NOT_FOUND' } })
      } else if (route?.name === 'report') {
        sendJson(res, 200, await salesReport(db, requestIdOf(req)))
      } else {
        sendJson(res, 404, { error: { code: 'NOT_FOUND' } })
      }
    } catch (error) {
      console.error(error)
      if (!res.headersSent) sendJson(res, 500, { error: { code: 'INTERNAL_ERROR' } })
    }
  }
  const server = await listen((req, res) => void handle(req, res))

  const gauge = () => {
    const used = pool.totalCount - pool.idleCount
    return {
      used,
      idle: pool.idleCount,
      max: POOL_MAX,
      waiting: pool.waitingCount,
      utilisation: (used + pool.waitingCount) / POOL_MAX,
      shedding: undefined,
      circuit: undefined,
      cancels: undefined,
    }
  }

  return {
    name: 'plain Kysely',
    url: server.url,
    gauge,
    queued: () => pool.waitingCount,
    drained: async (timeoutMs) => {
      const until = performance.now() + timeoutMs
      while (pool.waitingCount > 0 || pool.idleCount < pool.totalCount) {
        if (performance.now() > until) return false
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      return true
    },
    close: async () => {
      await server.close()
      await db.destroy()
    },
  }
}
