/**
 * The tables of sql/demo-schema.sql, as Kysely sees them, and the switch that
 * makes the database slow (the demo_settings table).
 */
import type { Generated } from 'kysely'
import type pg from 'pg'
import { SLOWNESS, type Phase, type RouteSlowness } from './config.js'

export interface Database {
  customers: { id: Generated<string>; email: string; name: string; tier: Generated<string>; created_at: Generated<Date> }
  orders: { id: Generated<string>; customer_id: string; status: Generated<string>; total_cents: number; placed_at: Generated<Date> }
  order_lines: { order_id: string; line_no: number; sku: string; quantity: number; price_cents: number }
  daily_sales: { day: Date; orders: number; revenue_cents: string; refreshed_at: Generated<Date> }
  demo_settings: { route: 'orders' | 'report'; extra_ms: number; spike_ms: number; spike_share: number }
}

/** Sets how long each route's query sleeps on the server (read by demo_pause() at every query). */
export async function setSlowness(admin: pg.Client, phase: Phase): Promise<void> {
  for (const [route, { ms, spikeMs, spikeShare }] of Object.entries(SLOWNESS[phase])) {
    await admin.query('update demo_settings set extra_ms = $2, spike_ms = $3, spike_share = $4 where route = $1', [route, ms, spikeMs, spikeShare])
  }
}

export function describeSlowness(phase: Phase): string {
  const describe = ({ ms, spikeMs, spikeShare }: RouteSlowness) =>
    `+${ms} ms${spikeShare > 0 ? ` (${Math.round(spikeShare * 100)} % of them +${spikeMs} ms)` : ''}`
  const { orders, report } = SLOWNESS[phase]
  return `each query sleeps ${describe(orders)} on GET /orders/:id, ${describe(report)} on GET /report`
}
