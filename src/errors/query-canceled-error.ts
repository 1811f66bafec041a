import { describePhase, round } from './deadline-exceeded-error.js'
import { GovernorError } from './governor-error.js'
import type { QueryPhase } from './query-phase.js'

/**
 * The caller's AbortSignal fired. `reason` is the signal's reason; when the
 * query was running it was cancelled on the server.
 *
 * @example
 * ```ts
 * const controller = new AbortController()
 * const pending = withQueryContext({ signal: controller.signal }, () =>
 *   sql`select pg_sleep(10)`.execute(db),
 * )
 * controller.abort(new Error('client went away'))
 * await pending // rejects with QueryCanceledError, code 'QUERY_CANCELED'
 * ```
 */
export class QueryCanceledError extends GovernorError {
  readonly phase: QueryPhase
  /** The abort reason of the signal that fired. */
  readonly reason: unknown
  readonly waitedMs: number
  readonly ranMs: number

  constructor(details: {
    readonly phase: QueryPhase
    readonly reason: unknown
    readonly waitedMs: number
    readonly ranMs: number
    readonly cause?: unknown
  }) {
    super(
      'QUERY_CANCELED',
      `query canceled ${describePhase(details.phase)} (waited ${round(details.waitedMs)} ms, ran ${round(details.ranMs)} ms): ${describeReason(details.reason)}`,
      details.cause === undefined ? undefined : { cause: details.cause },
    )
    this.phase = details.phase
    this.reason = details.reason
    this.waitedMs = details.waitedMs
    this.ranMs = details.ranMs
  }
}

function describeReason(reason: unknown): string {
  if (reason instanceof Error) return reason.message
  if (reason === undefined) return 'aborted'
  return String(reason)
}
