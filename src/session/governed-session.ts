import { BudgetRace } from '../context/budget-race.js'
import { now } from '../context/monotonic-clock.js'
import type { PolicyRegistry } from '../context/policy-registry.js'
import { budgetFrom, currentBudget, refusalToStart, type QueryBudget } from '../context/query-budget.js'
import { QueryCanceledError } from '../errors/query-canceled-error.js'
import { errorForStop } from '../errors/stop-error.js'
import type { GovernorEvents } from '../telemetry/governor-events.js'
import { CancelSettler } from './cancel-settler.js'
import type { Canceller, CancelOutcome } from './canceller.js'
import type { PgCursorConstructor, PgPoolClient, PgQueryResult } from './pg-types.js'
import { StatementRun, type InFlight, type StatementHost } from './statement-run.js'
import { isQueryCanceled, isSessionEnding, outcomeOf, reportStatement, sqlComment, withCallerStack } from './statement-outcome.js'
import type { StatementTimeoutLadder } from './statement-timeout-ladder.js'
import { StatementTimeoutCache, type StatementTimeoutChange, type TransactionStatus } from './statement-timeout-cache.js'
import { StreamWatch } from './stream-watch.js'
import { sessionStrategyFor, type SessionStrategy } from './session-strategy.js'

/** What every session of one governor shares. */
export interface SessionServices {
  readonly canceller: Canceller
  readonly ladder: StatementTimeoutLadder
  readonly policies: PolicyRegistry
  readonly events: GovernorEvents
  readonly cursor: PgCursorConstructor | undefined
  /** Prefix statements with a sqlcommenter-style comment (criticality, domain, traceparent). */
  readonly sqlComment: boolean
  /** How statement_timeout is carried and cancels are sent, by the pool's mode (direct when absent). */
  readonly strategy?: SessionStrategy | undefined
  /** The session was marked never to be reused; `error` when its connection failed. The governor evicts it if it holds it idle. */
  discarded(session: GovernedSession, error: Error | undefined): void
}

/** Why a stop reaches the server: our deadline, an abort, or Kysely's own inflight-query strategy. */
export type CancelReason = 'deadline' | 'abort' | 'kysely'

/** What a session is fit for once its user is done with it. */
export type SessionEnd = 'clean' | 'broken'

/** How long the cancel is repeated at most. */
const CANCEL_REPEAT_FOR_MS = 5_000

/**
 * One pg client, governed, and nothing about Kysely or the pool: every
 * statement carries its deadline to the server as statement_timeout (a SET
 * only when the ladder step changes), is rejected at its deadline or abort,
 * and is cancelled on the server; the session is then held until both the
 * statement and the cancel have settled, so a cancel never reaches the next
 * statement.
 *
 * @example
 * ```ts
 * const session = new GovernedSession(client, services)
 * const { rows } = await withQueryContext({ timeoutMs: 200 }, () => session.execute('select 1', []))
 * if ((await session.endUse()) === 'clean') session.returnToPool()
 * ```
 */
export class GovernedSession implements StatementHost {
  readonly #client: PgPoolClient
  readonly #services: SessionServices
  readonly #timeouts = new StatementTimeoutCache()
  readonly #settler = new CancelSettler()
  readonly #strategy: SessionStrategy
  /** The statement on the wire, for a cancel asked from outside (Kysely's strategies). */
  #inFlight: InFlight | undefined

  constructor(client: PgPoolClient, services: SessionServices) {
    this.#client = client
    this.#services = services
    this.#strategy = services.strategy ?? sessionStrategyFor(undefined)
    // pg-pool takes its error listener off a client while it is checked out; a
    // backend killed between statements would then crash the process.
    client.on('error', (error) => this.#discard(`connection error: ${error.message}`, error))
  }

  /** The server process id of this session. */
  get pid(): number | undefined {
    return this.#client.processID ?? undefined
  }

  get events(): GovernorEvents {
    return this.#services.events
  }

  /** The pg client, for advanced use (LISTEN, COPY). */
  get client(): PgPoolClient {
    return this.#client
  }

  /** Runs one statement under the ambient budget. */
  async execute<R>(sql: string, parameters: ReadonlyArray<unknown>, queryId?: string): Promise<PgQueryResult<R>> {
    let budget = currentBudget(this.#services.policies)
    const settling = this.#settler.settled()
    if (settling) budget = await this.#waitSettled(settling, budget)
    this.#assertUsable()
    const preparing = this.#prepare(budget)
    if (preparing) await preparing
    const text = this.#textOf(sql, budget)
    let result: PgQueryResult<R>
    try {
      // Without a wait or a SET nothing was awaited since the budget was taken: its clock reading is the send time.
      const sentAt = preparing || settling ? now() : budget.startedAt
      result = await new StatementRun<R>(this, budget, queryId).start(this.#client, text, parameters, sentAt)
    } catch (error) {
      throw withCallerStack(error, new Error())
    }
    if (StatementTimeoutCache.isCallerCommand(sql)) await this.#learnCallerStatementTimeout(sql)
    return result
  }

  /** Streams one statement's rows through a pg-cursor, `chunkSize` at a time, under the ambient budget. */
  async *stream<R>(sql: string, parameters: ReadonlyArray<unknown>, chunkSize: number, queryId?: string): AsyncIterableIterator<R[]> {
    const Cursor = this.#services.cursor
    if (!Cursor) {
      throw new Error("`cursor` is not present in your postgres dialect config. It's required to make streaming work in postgres.")
    }
    let budget = currentBudget(this.#services.policies)
    const settling = this.#settler.settled()
    if (settling) budget = await this.#waitSettled(settling, budget)
    this.#assertUsable()
    await this.#prepare(budget)
    const text = this.#textOf(sql, budget)
    const cursor = this.#client.query(new Cursor<R>(text, parameters.slice()))
    const watch = new StreamWatch(this, budget)
    let failure: unknown
    try {
      for (;;) {
        const rows = await watch.read(() => this.#track(cursor.read(chunkSize)))
        if (rows.length === 0) break
        yield rows
      }
    } catch (error) {
      failure = error
      throw error
    } finally {
      watch.unwatch()
      reportStatement(this.events, this.pid, budget, watch.sentAt, outcomeOf(failure), failure, queryId, text)
      // A stopped stream's cancel is draining: close the cursor after it, off the caller's path.
      if (watch.stopped) void this.#settler.after(() => cursor.close())
      else await cursor.close()
    }
  }

  /**
   * Runs a transaction-control statement (begin, commit, rollback, savepoint):
   * after any draining cancel, without a deadline, so that a rollback always
   * gets through.
   */
  async control(sql: string): Promise<PgQueryResult<unknown>> {
    const settling = this.#settler.settled()
    if (settling) await settling
    this.#assertUsable()
    const result = await this.#track(this.#client.query(sql))
    this.#timeouts.observe(this.#transactionStatus())
    return result
  }

  /** ROLLBACK TO SAVEPOINT ran: it may have undone a SET LOCAL of ours. */
  savepointRolledBack(): void {
    this.#timeouts.savepointRolledBack()
  }

  /**
   * Cancels the statement on the wire, if any (`terminate` ends the whole
   * session), and resolves once it and the cancel have settled.
   */
  cancelCurrent(method: 'cancel' | 'terminate'): Promise<void> {
    const inFlight = this.#inFlight
    return inFlight ? this.#cancel(inFlight, 'kysely', method, undefined) : Promise.resolve()
  }

  /** Marks the session to be destroyed when it is released. */
  discard(reason: string): void {
    this.#discard(reason, undefined)
  }

  /**
   * The release rule: a draining cancel is waited out; then a discarded
   * session is broken, one inside a transaction is rolled back (broken if the
   * rollback fails), any other is clean. Synchronous in the usual case.
   */
  endUse(): SessionEnd | Promise<SessionEnd> {
    const settling = this.#settler.settled()
    if (settling) return settling.then(() => this.endUse())
    if (this.#settler.discardReason !== undefined) return 'broken'
    if (this.#transactionStatus() === 'I') return 'clean'
    return this.#client.query('rollback').then(
      () => {
        this.#timeouts.observe('I')
        return 'clean'
      },
      (error: unknown) => {
        this.discard(`rollback on release failed: ${String(error)}`)
        return 'broken'
      },
    )
  }

  /** Hands the client back to pg-pool: destroyed if the session was discarded. */
  returnToPool(): void {
    const reason = this.#settler.discardReason
    if (reason !== undefined) this.#client.release(new Error(`pg-governor discarded the connection: ${reason}`))
    else this.#client.release()
  }

  /** @internal A statement went on the wire. */
  statementStarted(inFlight: InFlight): void {
    this.#inFlight = inFlight
  }

  /** @internal The server answered a statement. */
  statementEnded(inFlight: InFlight, error: unknown): void {
    if (this.#inFlight === inFlight) this.#inFlight = undefined
    // The server ends the session after a FATAL error; the socket may close only after we
    // are released, so the pool would hand a dead client to the next caller.
    if (error !== undefined && isSessionEnding(error)) this.discard(`session ended: ${(error as Error).message}`)
  }

  /** @internal A statement was stopped by its budget. */
  cancelInFlight(inFlight: InFlight, reason: 'deadline' | 'abort', serverEnded: (error: unknown) => void): void {
    void this.#cancel(inFlight, reason, 'cancel', serverEnded)
  }

  #cancel(inFlight: InFlight, reason: CancelReason, method: 'cancel' | 'terminate', serverEnded: ((error: unknown) => void) | undefined): Promise<void> {
    const pid = this.pid
    if (pid === undefined) {
      this.discard('no backend pid to cancel')
      return Promise.resolve()
    }
    const { canceller, events } = this.#services
    const sent = method === 'terminate' ? this.#strategy.terminate(canceller, pid, this.#client.secretKey) : this.#cancelUntilEnded(pid, inFlight)
    const settled = Promise.allSettled([inFlight.whenEnded(), sent]).then(([ended, delivered]) => {
      const endError = ended.status === 'fulfilled' ? ended.value : undefined
      serverEnded?.(endError)
      let outcome: CancelOutcome | undefined
      let error: unknown
      if (delivered.status === 'rejected') {
        error = delivered.reason
        this.discard(`cancel failed: ${String(error)}`)
      } else {
        outcome = delivered.value
        if (method === 'terminate') this.discard('session killed')
        // An unconfirmed protocol cancel may still be on its way: never let it meet the next statement.
        else if (!outcome.confirmed && !isQueryCanceled(endError)) this.discard('unconfirmed protocol cancel')
      }
      if (events.has('cancel')) events.emit('cancel', { pid, reason, outcome, error, destroyed: this.#settler.discardReason !== undefined })
    })
    return this.#settler.after(() => settled)
  }

  /**
   * Sends the cancel, and sends it again while the statement runs on. A cancel
   * that reaches the backend before the statement does (it was just sent) is
   * dropped by the server, and a function can catch query_canceled. Resolves
   * with the first cancel's outcome once the statement has ended and no cancel
   * is on its way any more, so that none can meet the next statement.
   */
  async #cancelUntilEnded(pid: number, inFlight: InFlight): Promise<CancelOutcome> {
    const { canceller } = this.#services
    const secretKey = this.#client.secretKey
    const outcome = await this.#strategy.cancel(canceller, pid, secretKey)
    let ended = false
    const whenEnded = inFlight.whenEnded().then(() => {
      ended = true
    })
    const giveUpAt = now() + CANCEL_REPEAT_FOR_MS
    const { firstMs, maxMs } = this.#strategy.cancelAgainAfter
    for (let delayMs = firstMs; ; delayMs = Math.min(delayMs * 2, maxMs)) {
      await endedOrElapsed(whenEnded, delayMs)
      if (ended || now() >= giveUpAt || this.#settler.discardReason !== undefined) return outcome
      await this.#strategy.cancel(canceller, pid, secretKey).catch(() => undefined)
    }
  }

  #discard(reason: string, error: Error | undefined): void {
    if (this.#settler.discard(reason) || error) this.#services.discarded(this, error)
  }

  /** Waits for a draining cancel, but no longer than the caller's own budget. */
  async #waitSettled(settling: Promise<void>, budget: QueryBudget): Promise<QueryBudget> {
    const race = new BudgetRace(settling, budget, (cause) =>
      errorForStop(cause, { phase: 'waiting', budgetMs: budget.remainingMs, waitedMs: now() - budget.startedAt, ranMs: 0 }),
    )
    try {
      await race.promise
    } catch (error) {
      reportStatement(this.events, this.pid, budget, now(), error instanceof QueryCanceledError ? 'canceled' : 'deadline_exceeded', error, undefined, undefined, 'waiting')
      throw error
    }
    return budgetFrom(budget, now())
  }

  #assertUsable(): void {
    const reason = this.#settler.discardReason
    if (reason !== undefined) throw new Error(`pg-governor discarded this connection (${reason}); it cannot run more statements`)
  }

  /** The statement as sent: with the sqlcommenter prefix when that is on. */
  #textOf(sql: string, budget: QueryBudget): string {
    return this.#services.sqlComment ? sqlComment(budget) + sql : sql
  }

  /**
   * Refuses a statement that cannot start, and brings statement_timeout to its
   * step. Returns a promise only when a SET is needed, so the usual statement
   * pays for no extra promise.
   */
  #prepare(budget: QueryBudget): Promise<void> | undefined {
    const refusal = refusalToStart(budget)
    if (refusal) {
      reportStatement(this.events, this.pid, budget, budget.startedAt, outcomeOf(refusal), refusal, undefined, undefined, 'before_start')
      throw refusal
    }
    const remaining = budget.remainingMs
    const change = this.#strategy.timeoutChange(this.#timeouts, remaining === Infinity ? 'default' : this.#services.ladder.bucketFor(remaining), this.#transactionStatus())
    return change ? this.#setStatementTimeout(change) : undefined
  }

  async #setStatementTimeout(change: StatementTimeoutChange): Promise<void> {
    // The value is a number we computed, never caller text.
    const value = change.value === 'default' ? 'default' : String(change.value)
    await this.#client.query(change.local ? `set local statement_timeout to ${value}` : `set statement_timeout to ${value}`)
    this.#timeouts.applied(change)
    const { events } = this.#services
    if (events.has('statementTimeout')) events.emit('statementTimeout', { pid: this.pid, valueMs: change.value, local: change.local })
  }

  /**
   * The caller ran its own SET/RESET of statement_timeout: learn the value the
   * server now has, so we keep it (when stricter than our step) instead of
   * overwriting it on the next statement.
   */
  async #learnCallerStatementTimeout(sql: string): Promise<void> {
    const { rows } = await this.#client.query<{ ms: number }>(`select setting::int as ms from pg_settings where name = 'statement_timeout'`)
    this.#timeouts.callerSet(StatementTimeoutCache.callerCommandOf(sql), rows[0]?.ms ?? 0, this.#transactionStatus())
  }

  #transactionStatus(): TransactionStatus {
    const status = this.#client.getTransactionStatus()
    return status === 'T' || status === 'E' ? status : 'I'
  }

  /** Tracks a promise-based statement (control statements, cursor reads) as the one in flight. */
  #track<T>(promise: Promise<T>): Promise<T> {
    const inFlight: InFlight = { whenEnded: () => promise.then(noError, (error: unknown) => error) }
    this.#inFlight = inFlight
    promise.then(
      () => this.statementEnded(inFlight, undefined),
      (error: unknown) => this.statementEnded(inFlight, error),
    )
    return promise
  }
}

/** Resolves when `ended` does or after `ms`, whichever is first, leaving no timer behind. */
function endedOrElapsed(ended: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const elapsed = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms)
    timer.unref()
  })
  return Promise.race([ended, elapsed]).finally(() => clearTimeout(timer))
}

function noError(): undefined {
  return undefined
}
