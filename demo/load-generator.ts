/**
 * The HTTP client side: sends a load plan to a service with fetch, on
 * schedule, and records what each request got.
 *
 * Each request carries X-Request-Timeout (its patience) and X-Demo-Request-Id
 * (so its queries can be recognised in pg_stat_activity). The client gives up
 * on its own CLIENT_GRACE_MS after its timeout; a planned abort fires earlier,
 * like a user navigating away. Either way the fetch is aborted, which closes
 * the connection: the server can tell the client is gone.
 */
import { CLIENT_GRACE_MS, type Criticality } from './config.js'
import type { LoadPlan, PlannedRequest } from './load-plan.js'
import { REQUEST_ID_HEADER } from './routes.js'

/**
 * What became of a request:
 * ok 200 · shed 503 · deadline 504 · gave_up: no answer within the client's
 * patience · aborted: the client left early on purpose · other: any other
 * status or a network error.
 */
export type Outcome = 'ok' | 'shed' | 'deadline' | 'gave_up' | 'aborted' | 'other'
export const OUTCOMES: readonly Outcome[] = ['ok', 'shed', 'deadline', 'gave_up', 'aborted', 'other']

export type OutcomeCounts = Record<Outcome | 'sent', number>

export interface RequestResult {
  readonly id: number
  readonly planned: PlannedRequest
  /** performance.now() when the fetch started. */
  readonly startedAt: number
  /** performance.now() when the client was done with it (answer read, or aborted). */
  settledAt: number | undefined
  outcome: Outcome | undefined
  status: number | undefined
  error: string | undefined
}

const GAVE_UP = new Error('the client gave up waiting')
const USER_ABORT = new Error('the user navigated away')

/** Request ids are unique across runs, so a late query of one run can never be taken for another's. */
let nextRequestId = 1

function emptyCounts(): OutcomeCounts {
  return { sent: 0, ok: 0, shed: 0, deadline: 0, gave_up: 0, aborted: 0, other: 0 }
}

export class LoadGenerator {
  readonly results: RequestResult[] = []
  readonly #byId = new Map<number, RequestResult>()
  readonly #counts: Record<Criticality, OutcomeCounts> = { critical: emptyCounts(), sheddable: emptyCounts() }
  #inFlight = 0
  #sending = false

  /** Cumulative counts per criticality (a copy). */
  counts(): Record<Criticality, OutcomeCounts> {
    return { critical: { ...this.#counts.critical }, sheddable: { ...this.#counts.sheddable } }
  }

  get inFlight(): number {
    return this.#inFlight
  }

  /** True while planned requests are still being sent (false once only answers are awaited). */
  get sending(): boolean {
    return this.#sending
  }

  /** performance.now() when the client was done with request `id`, or undefined while it still waits (or for an unknown id). */
  settledAt(id: number): number | undefined {
    return this.#byId.get(id)?.settledAt
  }

  /** Sends every planned request on schedule; resolves when the last one has settled. */
  async run(plan: LoadPlan, baseUrl: string): Promise<void> {
    const start = performance.now()
    const pending: Promise<void>[] = []
    let next = 0
    this.#sending = true
    while (next < plan.requests.length) {
      const elapsed = performance.now() - start
      // A late timer sends every request already due at once: the rate holds whatever the service does.
      while (next < plan.requests.length && (plan.requests[next] as PlannedRequest).atMs <= elapsed) {
        pending.push(this.#send(plan.requests[next] as PlannedRequest, baseUrl))
        next++
      }
      const upcoming = plan.requests[next]
      if (upcoming) await sleep(Math.max(1, upcoming.atMs - (performance.now() - start)))
    }
    this.#sending = false
    await Promise.all(pending)
  }

  async #send(planned: PlannedRequest, baseUrl: string): Promise<void> {
    const result: RequestResult = {
      id: nextRequestId++,
      planned,
      startedAt: performance.now(),
      settledAt: undefined,
      outcome: undefined,
      status: undefined,
      error: undefined,
    }
    this.results.push(result)
    this.#byId.set(result.id, result)
    const counts = this.#counts[planned.criticality]
    counts.sent++
    this.#inFlight++

    const controller = new AbortController()
    const giveUp = setTimeout(() => controller.abort(GAVE_UP), planned.timeoutMs + CLIENT_GRACE_MS)
    const userAbort = planned.abortAfterMs === undefined ? undefined : setTimeout(() => controller.abort(USER_ABORT), planned.abortAfterMs)
    try {
      const response = await fetch(baseUrl + planned.path, {
        headers: { 'x-request-timeout': String(planned.timeoutMs), [REQUEST_ID_HEADER]: String(result.id) },
        signal: controller.signal,
      })
      await response.arrayBuffer()
      result.status = response.status
      result.outcome = response.status === 200 ? 'ok' : response.status === 503 ? 'shed' : response.status === 504 ? 'deadline' : 'other'
    } catch (error) {
      if (controller.signal.reason === USER_ABORT) result.outcome = 'aborted'
      else if (controller.signal.reason === GAVE_UP) result.outcome = 'gave_up'
      else {
        result.outcome = 'other'
        result.error = error instanceof Error ? `${error.message}${error.cause instanceof Error ? `: ${error.cause.message}` : ''}` : String(error)
      }
    } finally {
      clearTimeout(giveUp)
      clearTimeout(userAbort)
      result.settledAt = performance.now()
      counts[result.outcome ?? 'other']++
      this.#inFlight--
    }
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** The results of one criticality (and phase, when given). */
export function select(results: readonly RequestResult[], criticality: Criticality, phase?: 'normal' | 'slow'): RequestResult[] {
  return results.filter((r) => r.planned.criticality === criticality && (phase === undefined || r.planned.phase === phase))
}
