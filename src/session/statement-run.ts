import { BudgetWatch } from '../context/budget-watch.js'
import type { QueryBudget } from '../context/query-budget.js'
import type { StopCause } from '../errors/stop-error.js'
import type { GovernorEvents, QueryOutcome } from '../telemetry/governor-events.js'
import type { PgClient, PgQueryResult } from './pg-types.js'
import { carriedQuery } from './carried-query.js'
import { carriedResult, isCarriedDeadline, type CarriedStatement } from './deadline-carrier.js'
import { isOurStatementTimeout, reportStatement, stoppedWhileRunning } from './statement-outcome.js'

/** A statement (or cursor read) on the wire, which a cancel must wait for. */
export interface InFlight {
  /** Resolves when the server has answered: with the error it ended with, or undefined. */
  whenEnded(): Promise<unknown>
  /** The statement carries its deadline to the server itself (SessionStrategy.carry): at the deadline the session closes rather than cancels. */
  readonly carriesDeadline?: boolean
}

/** What a statement needs of its session. */
export interface StatementHost {
  readonly pid: number | undefined
  readonly events: GovernorEvents
  statementStarted(inFlight: InFlight): void
  statementEnded(inFlight: InFlight, error: unknown): void
  /** The statement was stopped by its budget: cancel it on the server and hold the session until it has settled. */
  cancelInFlight(inFlight: InFlight, reason: 'deadline' | 'abort', serverEnded: (error: unknown) => void): void
}

/**
 * One statement on the wire, through pg's callback API so that a statement
 * costs one promise: the caller's. Settles it with pg's answer, or at the
 * deadline or abort with a typed error while the server-side cancel runs on;
 * the session waits for `whenEnded()` before its next statement.
 */
export class StatementRun<R> extends BudgetWatch implements InFlight {
  readonly #host: StatementHost
  readonly #budget: QueryBudget
  readonly #queryId: string | undefined
  #sql: string | undefined
  #sentAt = 0
  #resolve!: (result: PgQueryResult<R>) => void
  #reject!: (error: unknown) => void
  /** pg has called back. */
  #ended = false
  #endError: unknown
  #endWaiter: { readonly promise: Promise<unknown>; readonly resolve: (error: unknown) => void } | undefined

  readonly #carried: CarriedStatement | undefined
  readonly carriesDeadline: boolean

  /** `carried`: how the statement carries its deadline, if it does (SessionStrategy.carry). */
  constructor(host: StatementHost, budget: QueryBudget, queryId: string | undefined, carried?: CarriedStatement) {
    super(budget)
    this.#host = host
    this.#budget = budget
    this.#queryId = queryId
    this.#carried = carried
    this.carriesDeadline = carried !== undefined
  }

  /** Sends `sql`: as it is, or with the prefixes of an extended carrier in front (a simple carrier's text is `sql` already). */
  start(client: PgClient, sql: string, parameters: ReadonlyArray<unknown>, sentAt: number): Promise<PgQueryResult<R>> {
    return new Promise<PgQueryResult<R>>((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
      this.#sql = sql
      this.#sentAt = sentAt
      this.watch()
      this.#host.statementStarted(this)
      const carried = this.#carried?.kind === 'extended' ? carriedQuery(client, this.#carried.prefixes, sql, parameters, this.#callback) : undefined
      if (carried) client.query(carried)
      else client.query<R>(sql, parameters, this.#callback)
    })
  }

  whenEnded(): Promise<unknown> {
    if (this.#ended) return Promise.resolve(this.#endError)
    if (!this.#endWaiter) {
      let resolve!: (error: unknown) => void
      const promise = new Promise<unknown>((r) => (resolve = r))
      this.#endWaiter = { promise, resolve }
    }
    return this.#endWaiter.promise
  }

  readonly #callback = (error: Error | null | undefined, result: PgQueryResult<R>): void => {
    this.#ended = true
    this.#endError = error ?? undefined
    this.#host.statementEnded(this, this.#endError)
    this.#endWaiter?.resolve(this.#endError)
    if (!this.unwatch()) return
    if (!error) {
      this.#report('ok', undefined)
      this.#resolve(this.#carried?.kind === 'simple' ? carriedResult(result, this.#carried.prefixCount) : result)
    } else if (isOurStatementTimeout(error, this.deadline) || (this.carriesDeadline && isCarriedDeadline(error))) {
      const stopped = stoppedWhileRunning({ kind: 'deadline' }, this.#budget, this.#sentAt, error)
      this.#report('deadline_exceeded', stopped)
      this.#reject(stopped)
    } else {
      this.#report('error', error)
      this.#reject(error)
    }
  }

  #report(outcome: QueryOutcome, error: unknown): void {
    reportStatement(this.#host.events, this.#host.pid, this.#budget, this.#sentAt, outcome, error, this.#queryId, this.#sql)
  }

  protected onStop(cause: StopCause): void {
    const stopped = stoppedWhileRunning(cause, this.#budget, this.#sentAt)
    this.#report(cause.kind === 'deadline' ? 'deadline_exceeded' : 'canceled', stopped)
    this.#reject(stopped)
    this.#host.cancelInFlight(this, cause.kind, (serverError) => keepAsCause(stopped, serverError))
  }
}

/**
 * The caller got its error at the stop, before the server answered: when the
 * server's answer comes (the cancel's 57014, say), it becomes that error's
 * `cause`, so it is not lost.
 */
export function keepAsCause(stopped: Error, serverError: unknown): void {
  if (serverError === undefined || stopped.cause !== undefined) return
  Object.defineProperty(stopped, 'cause', { value: serverError, writable: true, configurable: true, enumerable: false })
}
