/**
 * What the two routes do, shared by both services: the same Kysely queries,
 * whichever dialect runs them. Only the wrapping differs (governed-service.ts
 * versus plain-service.ts).
 *
 *   GET /orders/:id  critical, domain checkout: one order with its customer
 *   GET /report      sheddable, domain report: revenue of the top SKUs
 *
 * Each query also calls demo_pause() (sql/demo-schema.sql), the simulated
 * slowness, and carries the load generator's request id in a comment so that
 * the zombie sampler can tell, from pg_stat_activity, which HTTP request a
 * busy backend is working for.
 */
import type { IncomingMessage } from 'node:http'
import { sql, type Kysely } from 'kysely'
import type { Database } from './database.js'

/** The request header carrying the load generator's request id. */
export const REQUEST_ID_HEADER = 'x-demo-request-id'
/** Every tagged statement contains `/* demo-req:<id> *\/`. */
export const QUERY_TAG_PREFIX = 'demo-req:'

/** A matched route, or undefined. */
export type Route = { readonly name: 'order'; readonly orderId: number } | { readonly name: 'report' } | { readonly name: 'metrics' }

export function matchRoute(req: IncomingMessage): Route | undefined {
  if (req.method !== 'GET' && req.method !== 'HEAD') return undefined
  const path = (req.url ?? '/').split('?')[0]
  const order = /^\/orders\/(\d{1,9})$/.exec(path ?? '')
  if (order) return { name: 'order', orderId: Number(order[1]) }
  if (path === '/report') return { name: 'report' }
  if (path === '/metrics') return { name: 'metrics' }
  return undefined
}

/** The request id for the SQL comment: digits only, so it can never break out of the comment. */
export function requestIdOf(req: IncomingMessage): string | undefined {
  const value = req.headers[REQUEST_ID_HEADER]
  return typeof value === 'string' && /^\d{1,12}$/.test(value) ? value : undefined
}

function tag(requestId: string | undefined) {
  return sql.raw(requestId === undefined ? '' : `/* ${QUERY_TAG_PREFIX}${requestId} */`)
}

/** The simulated slowness: an uncorrelated scalar subquery, so PostgreSQL runs it once per statement. */
function simulatedLatency(route: 'orders' | 'report') {
  return sql<number>`(select demo_pause(${route}))`
}

export function findOrder(db: Kysely<Database>, orderId: number, requestId: string | undefined) {
  return db
    .selectFrom('orders')
    .innerJoin('customers', 'customers.id', 'orders.customer_id')
    .select(['orders.id', 'orders.status', 'orders.total_cents', 'orders.placed_at', 'customers.name as customer', 'customers.tier'])
    .select(simulatedLatency('orders').as('slowed_ms'))
    .where('orders.id', '=', String(orderId))
    .modifyEnd(tag(requestId))
    .executeTakeFirst()
}

export function salesReport(db: Kysely<Database>, requestId: string | undefined) {
  return db
    .selectFrom('order_lines')
    .select((eb) => [
      'sku',
      eb.fn.sum<string>('quantity').as('units'),
      eb.fn.sum<string>(sql<number>`quantity * price_cents`).as('revenue_cents'),
      simulatedLatency('report').as('slowed_ms'),
    ])
    .groupBy('sku')
    .orderBy('revenue_cents', 'desc')
    .limit(5)
    .modifyEnd(tag(requestId))
    .execute()
}
