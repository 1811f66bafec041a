/**
 * The load, decided up front from a seed so that both runs send exactly the
 * same requests at the same offsets: Poisson arrivals at RATE_PER_SECOND
 * (open loop: a request starts on schedule whatever the ones before it are
 * doing), CRITICAL_SHARE of them critical, CLIENT_ABORT_SHARE of them
 * abandoned by their client after a random delay.
 */
import { seededRandom } from '../test/support/seeded-random.js'
import {
  CLIENT_ABORT_AFTER_MS,
  CLIENT_ABORT_SHARE,
  CRITICAL_SHARE,
  LOAD_SEED,
  RATE_PER_SECOND,
  ROUTES,
  type Criticality,
  type Phase,
} from './config.js'

export interface PlannedRequest {
  /** Offset from the start of the run, in milliseconds. */
  readonly atMs: number
  readonly criticality: Criticality
  readonly phase: Phase
  /** Path and query, e.g. `/orders/42`. */
  readonly path: string
  /** Sent as X-Request-Timeout. */
  readonly timeoutMs: number
  /** The client aborts the fetch after this many milliseconds (when the answer has not come yet). */
  readonly abortAfterMs: number | undefined
}

export interface LoadPlan {
  readonly durationMs: number
  /** When the slow phase starts, from the start of the run. */
  readonly slowFromMs: number
  readonly requests: readonly PlannedRequest[]
}

export function planLoad(durationSeconds: number): LoadPlan {
  const random = seededRandom(LOAD_SEED)
  const durationMs = durationSeconds * 1000
  const slowFromMs = durationMs / 2
  // Bounded whatever the rate: at most 1.5x the expected count.
  const maxRequests = Math.ceil(RATE_PER_SECOND * durationSeconds * 1.5)
  const requests: PlannedRequest[] = []
  let atMs = 0
  for (;;) {
    atMs += (-Math.log(1 - random()) * 1000) / RATE_PER_SECOND
    if (atMs >= durationMs || requests.length >= maxRequests) break
    const criticality: Criticality = random() < CRITICAL_SHARE ? 'critical' : 'sheddable'
    const orderId = 1 + Math.floor(random() * 2000)
    const abortAfterMs =
      random() < CLIENT_ABORT_SHARE ? Math.round(CLIENT_ABORT_AFTER_MS.min + random() * (CLIENT_ABORT_AFTER_MS.max - CLIENT_ABORT_AFTER_MS.min)) : undefined
    requests.push({
      atMs,
      criticality,
      phase: atMs < slowFromMs ? 'normal' : 'slow',
      path: criticality === 'critical' ? `/orders/${orderId}` : '/report',
      timeoutMs: ROUTES[criticality].timeoutMs,
      abortAfterMs,
    })
  }
  return { durationMs, slowFromMs, requests }
}
