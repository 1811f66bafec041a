/**
 * The demo's knobs, in one place. Two can be set from the environment:
 *
 *   DEMO_SECONDS  seconds of load, both runs together (default 50: the whole
 *                 demo takes about a minute); CI uses DEMO_SECONDS=10
 *   DEMO_RATE     requests per second the load generator sends (default 60)
 *
 * With the defaults the pool has 8 connections. In the normal phase the load
 * needs about 2.5 of them; in the slow phase about 20, well past what the pool
 * can serve: that is the overload both setups face.
 */

export type Criticality = 'critical' | 'sheddable'
export type Phase = 'normal' | 'slow'

export const CRITICALITIES: readonly Criticality[] = ['critical', 'sheddable']

function envNumber(name: string, fallback: number, min: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw.trim() === '') return fallback
  const value = Number(raw)
  if (!Number.isFinite(value) || value < min) {
    throw new Error(`${name} must be a number >= ${min}; got ${JSON.stringify(raw)}`)
  }
  return value
}

/** Seconds of load in all; each of the two runs gets half, and its second half is the slow phase. */
export const DEMO_SECONDS = envNumber('DEMO_SECONDS', 50, 4)
export const RUN_SECONDS = DEMO_SECONDS / 2

/** Open-loop arrivals per second (Poisson), whatever the service does with them. */
export const RATE_PER_SECOND = envNumber('DEMO_RATE', 60, 1)

/** Share of arrivals that are critical (GET /orders/:id); the rest are sheddable (GET /report). */
export const CRITICAL_SHARE = 0.15

/** Share of requests whose client gives up early (a user navigating away): it aborts the fetch after a random delay. */
export const CLIENT_ABORT_SHARE = 0.05
export const CLIENT_ABORT_AFTER_MS = { min: 10, max: 400 } as const

/** Connections in each setup's pool. */
export const POOL_MAX = 8

/** Seed of the load plan: both runs send exactly the same requests at the same offsets. */
export const LOAD_SEED = 6

/** The two routes, what the client asks for (X-Request-Timeout) and how long it waits at most. */
export const ROUTES = {
  critical: { label: 'GET /orders/:id', domain: 'checkout', timeoutMs: 1_000 },
  sheddable: { label: 'GET /report', domain: 'report', timeoutMs: 2_000 },
} as const satisfies Record<Criticality, { label: string; domain: string; timeoutMs: number }>

/**
 * A client gives the server this long past its X-Request-Timeout to deliver an
 * answer (a 504 included) before it gives up on its own.
 */
export const CLIENT_GRACE_MS = 200

/**
 * How long each route's query sleeps on the server (demo_settings), per phase:
 * `ms`, except a `spikeShare` of the queries, which sleep `spikeMs` (a long tail).
 */
export interface RouteSlowness {
  readonly ms: number
  readonly spikeMs: number
  readonly spikeShare: number
}
export const SLOWNESS: Record<Phase, { readonly orders: RouteSlowness; readonly report: RouteSlowness }> = {
  normal: { orders: { ms: 2, spikeMs: 0, spikeShare: 0 }, report: { ms: 40, spikeMs: 0, spikeShare: 0 } },
  slow: { orders: { ms: 20, spikeMs: 0, spikeShare: 0 }, report: { ms: 250, spikeMs: 3_000, spikeShare: 0.05 } },
}

/** pg_stat_activity is sampled this often for zombie backends. */
export const SAMPLE_INTERVAL_MS = 200

/** The live view redraws this often. */
export const VIEW_INTERVAL_MS = 1_000
