import { DeadlineExceededError } from './deadline-exceeded-error.js'
import { QueryCanceledError } from './query-canceled-error.js'
import type { QueryPhase } from './query-phase.js'

/** Why a wait or a statement was stopped before it settled. */
export type StopCause = { readonly kind: 'deadline' } | { readonly kind: 'abort'; readonly reason: unknown }

/**
 * The typed error for a stop: `DeadlineExceededError` for the deadline,
 * `QueryCanceledError` (with the signal's reason) for an abort.
 */
export function errorForStop(
  cause: StopCause,
  details: { readonly phase: QueryPhase; readonly budgetMs: number; readonly waitedMs: number; readonly ranMs: number; readonly serverError?: unknown },
): DeadlineExceededError | QueryCanceledError {
  const { phase, budgetMs, waitedMs, ranMs, serverError } = details
  return cause.kind === 'deadline'
    ? new DeadlineExceededError({ phase, budgetMs, waitedMs, ranMs, cause: serverError })
    : new QueryCanceledError({ phase, reason: cause.reason, waitedMs, ranMs, cause: serverError })
}
