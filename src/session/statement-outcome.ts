import { now } from '../context/monotonic-clock.js'
import type { QueryBudget } from '../context/query-budget.js'
import { traceOf, traceparent } from '../context/trace-context.js'
import { DeadlineExceededError } from '../errors/deadline-exceeded-error.js'
import { QueryCanceledError } from '../errors/query-canceled-error.js'
import { errorForStop, type StopCause } from '../errors/stop-error.js'
import type { QueryPhase } from '../errors/query-phase.js'
import type { GovernorEvents, QueryOutcome } from '../telemetry/governor-events.js'

const QUERY_CANCELED = '57014'

/** The `query` event of a statement that ran (or was stopped on the wire); built only when someone listens. */
export function reportStatement(
  events: GovernorEvents,
  pid: number | undefined,
  budget: QueryBudget,
  sentAt: number,
  outcome: QueryOutcome,
  error: unknown,
  queryId: string | undefined,
  sql: string | undefined,
  phase: QueryPhase = 'running',
): void {
  if (!events.has('query')) return
  events.emit('query', {
    outcome,
    criticality: budget.criticality,
    domain: budget.domain,
    phase,
    budgetMs: budget.remainingMs,
    waitedMs: sentAt - budget.startedAt,
    ranMs: now() - sentAt,
    pid,
    sqlState: sqlStateOf(error) ?? sqlStateOf((error as { cause?: unknown } | undefined)?.cause),
    queryId,
    sql,
    context: budget.context,
    error,
  })
}

/** The typed error for a statement stopped on the wire, with where its time went and the server's error as cause. */
export function stoppedWhileRunning(cause: StopCause, budget: QueryBudget, sentAt: number, serverError?: unknown): Error {
  return errorForStop(cause, { phase: 'running', budgetMs: budget.remainingMs, waitedMs: sentAt - budget.startedAt, ranMs: now() - sentAt, serverError })
}

/**
 * Our statement_timeout is never below the remaining budget, so a statement
 * timeout from the server at the deadline is ours (a DeadlineExceededError
 * with the server's error as cause); one that fires earlier is the caller's.
 */
export function isOurStatementTimeout(error: unknown, deadline: number): boolean {
  return isStatementTimeout(error) && now() >= deadline - 1
}

/**
 * A sqlcommenter-style comment, so that pg_stat_activity shows who runs what.
 * Keys sorted, values URL-encoded and quoted as the sqlcommenter spec asks;
 * domains are validated to safe characters, so nothing can close the comment.
 */
export function sqlComment(budget: QueryBudget): string {
  const fields = [`criticality='${budget.criticality}'`]
  if (budget.domain !== undefined) fields.push(`domain='${encodeURIComponent(budget.domain)}'`)
  const trace = traceOf(budget.context)
  if (trace) fields.push(`traceparent='${encodeURIComponent(traceparent(trace))}'`)
  return `/*${fields.join(',')}*/ `
}

export function sqlStateOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null | undefined)?.code
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined
}

/**
 * Appends the caller's frames to a pg error, whose own stack ends in pg's
 * protocol parser. Lazily: a deadline can fail many statements at one
 * instant, and formatting a stack costs (source maps make it dearer), so it
 * happens when somebody reads `error.stack`. Where the stack is a data
 * property (Node 20) the error's own is formatted here; from Node 22 on it is
 * an accessor and nothing is formatted until read.
 */
export function withCallerStack(error: unknown, caller: Error): unknown {
  if (!(error instanceof Error)) return error
  const own = Object.getOwnPropertyDescriptor(error, 'stack')
  if (!own?.configurable) return error
  let joined: unknown
  let formatted = false
  Object.defineProperty(error, 'stack', {
    configurable: true,
    enumerable: own.enumerable ?? false,
    get() {
      if (!formatted) {
        formatted = true
        const base: unknown = own.get ? own.get.call(error) : own.value
        const frames = caller.stack?.split('\n').slice(1).join('\n')
        joined = typeof base === 'string' && frames ? `${base}\n${frames}` : base
      }
      return joined
    },
    set(value: unknown) {
      formatted = true
      joined = value
    },
  })
  return error
}

/** The server ends the session after this error (or the socket is gone). */
export function isSessionEnding(error: unknown): boolean {
  const { severity, code } = (error ?? {}) as { severity?: unknown; code?: unknown }
  if (severity === 'FATAL' || severity === 'PANIC') return true
  if (typeof code === 'string') return code.startsWith('08') || code.startsWith('57P')
  // pg's own errors for a dead socket carry no SQLSTATE.
  return error instanceof Error && /Connection terminated|connection error|not queryable/i.test(error.message)
}

export function isQueryCanceled(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === QUERY_CANCELED
}

function isStatementTimeout(error: unknown): boolean {
  return isQueryCanceled(error) && /statement timeout/.test((error as Error).message)
}

/** The outcome a statement's error (undefined: none) is reported as. */
export function outcomeOf(error: unknown): QueryOutcome {
  if (error === undefined) return 'ok'
  return error instanceof DeadlineExceededError ? 'deadline_exceeded' : error instanceof QueryCanceledError ? 'canceled' : 'error'
}
