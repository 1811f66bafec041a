import type { Criticality } from '../context/criticality.js'
import { GovernorError } from './governor-error.js'

/**
 * Why admission refused a query:
 * - `utilisation`: the pool is busier than this criticality's threshold;
 * - `queue`: the wait queue is at its bound;
 * - `deadline`: the predicted wait plus run time does not fit the remaining budget;
 * - `circuit_open`: connections are failing; the breaker fails fast until a probe succeeds.
 *
 * @example
 * ```ts
 * if (error instanceof LoadShedError && error.reason === 'circuit_open') alertOnCall()
 * ```
 */
export type ShedReason = 'utilisation' | 'queue' | 'deadline' | 'circuit_open'

/**
 * Admission refused the query before anything was sent to the server. Retry
 * after `retryAfterMs` at the earliest (an HTTP adapter answers 503 with
 * Retry-After).
 *
 * @example
 * ```ts
 * try {
 *   await withQueryContext({ criticality: 'sheddable' }, () => db.selectFrom('report').selectAll().execute())
 * } catch (error) {
 *   if (error instanceof LoadShedError) res.setHeader('Retry-After', Math.ceil(error.retryAfterMs / 1000)).status(503)
 * }
 * ```
 */
export class LoadShedError extends GovernorError {
  readonly criticality: Criticality
  readonly reason: ShedReason
  /** A hint: when trying again has a fair chance, in milliseconds. */
  readonly retryAfterMs: number

  constructor(details: { readonly criticality: Criticality; readonly reason: ShedReason; readonly retryAfterMs: number; readonly detail: string }) {
    super('LOAD_SHED', `query shed (${details.criticality}, ${details.reason}): ${details.detail}; retry after ${details.retryAfterMs} ms`)
    this.criticality = details.criticality
    this.reason = details.reason
    this.retryAfterMs = details.retryAfterMs
  }
}
