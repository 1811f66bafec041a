import type { AdmissionTicket } from '../admission/admission-gate.js'
import { now } from '../context/monotonic-clock.js'
import { DeadlineExceededError } from '../errors/deadline-exceeded-error.js'
import { LoadShedError } from '../errors/load-shed-error.js'
import { QueryCanceledError } from '../errors/query-canceled-error.js'
import type { QueryPhase } from '../errors/query-phase.js'
import type { GovernorEvents } from '../telemetry/governor-events.js'

/**
 * The `query` event of work that never reached a statement: refused, expired
 * or aborted while it waited for a connection. Built only when someone listens.
 *
 * @example
 * ```ts
 * reportRefusal(events, shedError, ticket) // outcome 'shed', phase 'before_start'
 * ```
 */
export function reportRefusal(events: GovernorEvents, error: unknown, ticket: AdmissionTicket): void {
  if (!events.has('query')) return
  const outcome =
    error instanceof LoadShedError ? 'shed' : error instanceof DeadlineExceededError ? 'deadline_exceeded' : error instanceof QueryCanceledError ? 'canceled' : 'error'
  events.emit('query', {
    outcome,
    criticality: ticket.criticality,
    domain: ticket.context?.domain,
    phase: outcome === 'shed' ? 'before_start' : ((error as { phase?: QueryPhase }).phase ?? 'waiting'),
    budgetMs: ticket.deadline - ticket.startedAt,
    waitedMs: now() - ticket.startedAt,
    ranMs: 0,
    pid: undefined,
    sqlState: undefined,
    queryId: undefined,
    sql: undefined,
    context: ticket.context,
    error,
  })
}
