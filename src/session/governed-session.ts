import { BudgetRace } from '../context/budget-race.js'
import { now } from '../context/monotonic-clock.js'
import { budgetFrom, currentBudget, refusalToStart, type QueryBudget } from '../context/query-budget.js'
import { QueryCanceledError } from '../errors/query-canceled-error.js'
import { errorForStop } from '../errors/stop-error.js'
import type { GovernorEvents } from '../telemetry/governor-events.js'
import { CancelSettler } from './cancel-settler.js'
import type { PgPoolClient, PgQueryResult } from './pg-types.js'
import { keepAsCause, StatementRun, type InFlight, type StatementHost } from './statement-run.js'
import { isSessionEnding, outcomeOf, reportStatement, sqlComment, stoppedWhileRunning, withCallerStack } from './statement-outcome.js'
import { StatementTimeoutCache, type StatementTimeoutChange, type TransactionStatus } from './statement-timeout-cache.js'
import { StreamWatch } from './stream-watch.js'
import { cancelUntilEnded, reasonToDiscard } from './statement-cancel.js'
import { canCarryQueries } from './carried-query.js'
import { closeAtDeadline } from './close-at-deadline.js'
import { isCloseCheckRefused, type CarriedStatement } from './deadline-carrier.js'
import { sessionStrategyFor, type SessionStrategy } from './session-strategy.js'
import { UnansweredStatement, type LostBackend } from './unanswered-statement.js'
import { ROLLBACK_TIMEOUT_MS, type CancelReason, type SessionEnd, type SessionServices } from './session-services.js'

export { ROLLBACK_TIMEOUT_MS, type CancelReason, type SessionEnd, type SessionServices } from './session-services.js'

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
  readonly #unanswered = new UnansweredStatement(now())
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
  execute<R>(sql: string, parameters: ReadonlyArray<unknown>, queryId?: string): Promise<PgQueryResult<R>> {
    return this.executeAs<R, PgQueryResult<R>>(asIs, sql, parameters, queryId)
  }

  /**
   * {@link execute}, with the result translated by `map` before the promise
   * settles: an adapter's translation then costs no promise of its own.
   */
  async executeAs<R, T>(map: (result: PgQueryResult<R>) => T, sql: string, parameters: ReadonlyArray<unknown>, queryId?: string): Promise<T> {
    let budget = currentBudget(this.#services.policies)
    const settling = this.#settler.settled()
    if (settling) budget = await this.#waitSettled(settling, budget)
    this.#assertUsable()
    const preparing = this.#prepare(budget)
    if (preparing) await preparing
    const carried = this.#strategy.carriesDeadlines ? this.#carry(sql, parameters, budget) : undefined
    const text = this.#textOf(carried?.kind === 'simple' ? carried.text : sql, budget)
    let result: PgQueryResult<R>
    try {
      // Without a wait or a SET nothing was awaited since the budget was taken: its clock reading is the send time.
      const sentAt = preparing || settling ? now() : budget.startedAt
      result = await new StatementRun<R>(this, budget, queryId, carried).start(this.#client, text, parameters, sentAt)
    } catch (error) {
      // Nothing of the statement ran: the server refused the SET in front of it.
      if (carried && isCloseCheckRefused(error)) {
        this.#strategy.closeCheckRefused()
        return this.executeAs(map, sql, parameters, queryId)
      }
      throw withCallerStack(error, new Error())
    }
    if (StatementTimeoutCache.isCallerCommand(sql)) await this.#learnCallerStatementTimeout(sql, budget)
    return map(result)
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
      // A stopped stream's cancel is draining: the close goes after it, off the caller's path. Else
      // the caller waits for the close while its budget lasts, and no longer: a slow network must not
      // hold a stream that has all its rows past its deadline (the session waits for the close).
      const closing = this.#settler.after(() => this.#track(cursor.close()))
      if (!watch.stopped) await this.#waitWithin(closing, budget)
    }
  }

  /**
   * Runs a transaction-control statement (begin, commit, savepoint, release)
   * under the ambient budget, as any statement: at the deadline the caller
   * gets its error and the statement is cancelled. A commit stopped so may or
   * may not have committed (as with any lost answer to a commit).
   *
   * A rollback is not bounded by the deadline, because the deadline has often
   * passed already (it is why the transaction is rolled back): it is queued
   * after any draining cancel and awaited only while the budget lasts; past
   * that, the caller goes on while the rollback finishes in the background,
   * within {@link ROLLBACK_TIMEOUT_MS}, or the session is destroyed (which
   * rolls back as surely). The session is not reused before either.
   */
  async control(sql: string): Promise<PgQueryResult<unknown>> {
    let budget = currentBudget(this.#services.policies)
    if (/^\s*rollback\s*$/i.test(sql)) return this.#rollback(budget)
    const settling = this.#settler.settled()
    if (settling) budget = await this.#waitSettled(settling, budget)
    this.#assertUsable()
    const refusal = refusalToStart(budget)
    if (refusal) throw refusal
    const result = await this.#bounded(this.#client.query(sql), budget)
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
    return this.#queueRollback('rollback on release').then(() => (this.#settler.discardReason === undefined ? 'clean' : 'broken'))
  }

  /** Hands the client back to pg-pool: destroyed if the session was discarded. */
  returnToPool(): void {
    const reason = this.#settler.discardReason
    if (reason !== undefined) this.#client.release(new Error(`pg-governor discarded the connection: ${reason}`))
    else this.#client.release()
  }

  /**
   * The backend, if it may still run a statement the server never answered
   * (the connection failed or was destroyed under it): the governor holds the
   * permit of such a session past its destruction (lost-backend-hold.ts).
   */
  get lostBackend(): LostBackend | undefined {
    return this.#unanswered.lostBackend(this.pid, this.#timeouts.inForce(this.#transactionStatus()))
  }

  /** @internal A statement went on the wire. */
  statementStarted(inFlight: InFlight): void {
    this.#inFlight = inFlight
    this.#unanswered.sent(now())
  }

  /** @internal The server answered a statement. */
  statementEnded(inFlight: InFlight, error: unknown): void {
    if (this.#inFlight === inFlight) this.#inFlight = undefined
    this.#unanswered.ended(error)
    // The server ends the session after a FATAL error; the socket may close only after we
    // are released, so the pool would hand a dead client to the next caller.
    if (error !== undefined && isSessionEnding(error)) this.discard(`session ended: ${(error as Error).message}`)
  }

  /** @internal A statement was stopped by its budget. */
  cancelInFlight(inFlight: InFlight, reason: 'deadline' | 'abort', serverEnded: (error: unknown) => void): void {
    // A statement that carries its deadline is closed at it instead: PgBouncer drops a cancel for a statement it still queues.
    const closed = reason === 'deadline' && inFlight.carriesDeadline === true ? closeAtDeadline(this.#client, inFlight, this.#services.events, serverEnded) : undefined
    if (closed) {
      this.discard('closed at the deadline (the statement carries its own statement_timeout)')
      void this.#settler.after(() => closed)
    } else {
      void this.#cancel(inFlight, reason, 'cancel', serverEnded)
    }
  }

  #cancel(inFlight: InFlight, reason: CancelReason, method: 'cancel' | 'terminate', serverEnded: ((error: unknown) => void) | undefined): Promise<void> {
    const pid = this.pid
    if (pid === undefined) {
      this.discard('no backend pid to cancel')
      return Promise.resolve()
    }
    const { canceller, events } = this.#services
    const subject = { pid, secretKey: this.#client.secretKey, canceller, strategy: this.#strategy, isDiscarded: () => this.#settler.discardReason !== undefined }
    const sent = method === 'terminate' ? this.#strategy.terminate(canceller, pid, subject.secretKey) : cancelUntilEnded(subject, inFlight)
    const settled = Promise.allSettled([inFlight.whenEnded(), sent]).then(([ended, delivered]) => {
      const endError = ended.status === 'fulfilled' ? ended.value : undefined
      serverEnded?.(endError)
      const discardReason = reasonToDiscard(method, delivered, endError)
      if (discardReason !== undefined) this.discard(discardReason)
      if (events.has('cancel')) {
        const outcome = delivered.status === 'fulfilled' ? delivered.value : undefined
        const error = delivered.status === 'rejected' ? delivered.reason : undefined
        events.emit('cancel', { pid, reason, outcome, error, destroyed: this.#settler.discardReason !== undefined })
      }
    })
    return this.#settler.after(() => settled)
  }

  #discard(reason: string, error: Error | undefined): void {
    if (this.#settler.discard(reason) || error) this.#services.discarded(this, error)
  }

  /** Waits for a draining cancel, but no longer than the caller's own budget. */
  async #waitSettled(settling: Promise<void>, budget: QueryBudget): Promise<QueryBudget> {
    // A watch does not see a signal that aborted before it began: check first.
    const refusal = refusalToStart(budget)
    try {
      if (refusal) throw refusal
      await new BudgetRace(settling, budget, (cause) =>
        errorForStop(cause, { phase: 'waiting', budgetMs: budget.remainingMs, waitedMs: now() - budget.startedAt, ranMs: 0 }),
      ).promise
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
  /** The statement with its deadline carried, as the pool's strategy has it, if this client can send it so. */
  #carry(sql: string, parameters: ReadonlyArray<unknown>, budget: QueryBudget): CarriedStatement | undefined {
    const carried = this.#strategy.carry(sql, parameters, budget.deadline, this.#transactionStatus())
    return carried?.kind === 'extended' && !canCarryQueries(this.#client) ? undefined : carried
  }

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
    return change ? this.#setStatementTimeout(change, budget) : undefined
  }

  /**
   * The SET, bounded by the statement's budget like the statement itself. A
   * SET stopped by the deadline is cancelled and settled like a statement;
   * the cache learns its value only if it went through, whenever it ends.
   */
  async #setStatementTimeout(change: StatementTimeoutChange, budget: QueryBudget): Promise<void> {
    // The value is a number we computed, never caller text.
    const value = change.value === 'default' ? 'default' : String(change.value)
    const setting = this.#client.query(change.local ? `set local statement_timeout to ${value}` : `set statement_timeout to ${value}`)
    setting.then(
      () => this.#timeouts.applied(change),
      () => {},
    )
    await this.#bounded(setting, budget)
    const { events } = this.#services
    if (events.has('statementTimeout')) events.emit('statementTimeout', { pid: this.pid, valueMs: change.value, local: change.local })
  }

  /**
   * The caller ran its own SET/RESET of statement_timeout: learn the value the
   * server now has, so we keep it (when stricter than our step) instead of
   * overwriting it on the next statement. The caller waits for the read-back
   * only while its budget lasts; the session does until it ends, and is
   * destroyed if it fails or does not come (rather than run on a value we do
   * not know).
   */
  async #learnCallerStatementTimeout(sql: string, budget: QueryBudget): Promise<void> {
    if (!this.#strategy.learnsCallerTimeout(this.#transactionStatus())) return
    const command = StatementTimeoutCache.callerCommandOf(sql)
    const learning = this.#settler.after(() =>
      this.#track(this.#client.query<{ ms: number }>(`select setting::int as ms from pg_settings where name = 'statement_timeout'`)).then(({ rows }) =>
        this.#timeouts.callerSet(command, rows[0]?.ms ?? 0, this.#transactionStatus()),
      ),
    )
    await this.#waitWithin(learning, budget)
  }

  /** Waits for `work` while `budget` lasts; past that, returns and lets it finish without the caller. */
  async #waitWithin(work: Promise<void>, budget: QueryBudget): Promise<void> {
    if (budget.deadline === Infinity && !budget.context?.signals.length) return work
    // Already stopped (a watch does not see a signal that aborted before it began): do not wait at all.
    if (refusalToStart(budget)) return
    await new BudgetRace(work, budget, () => new Error('the caller stopped waiting')).promise.catch(() => undefined)
  }

  /**
   * A rollback that always gets through or destroys the session (which rolls
   * back as surely): it never fails its caller, so that the error that caused
   * it is the one the caller sees. The caller waits for it only while its
   * budget lasts.
   */
  async #rollback(budget: QueryBudget): Promise<PgQueryResult<unknown>> {
    // A session marked for destruction is rolled back by its destruction.
    if (this.#settler.discardReason === undefined) await this.#waitWithin(this.#queueRollback('rollback'), budget)
    return ROLLED_BACK
  }

  /** Queues a ROLLBACK after whatever drains, bounded by {@link ROLLBACK_TIMEOUT_MS}; failure or overrun marks the session for destruction. */
  #queueRollback(what: string): Promise<void> {
    return this.#settler.after(
      () =>
        this.#track(this.#client.query('rollback')).then(
          () => this.#timeouts.observe('I'),
          (error: unknown) => {
            throw new Error(`${what} failed: ${String(error)}`)
          },
        ),
      ROLLBACK_TIMEOUT_MS,
    )
  }

  /**
   * An internal statement (our SET, a transaction-control statement) as the
   * statement on the wire, bounded by `budget`: at the deadline or abort the
   * caller gets its typed error at once, the statement is cancelled on the
   * server, and the session is held until both have settled.
   */
  #bounded<T>(promise: Promise<T>, budget: QueryBudget): Promise<T> {
    const inFlight = this.#trackInFlight(promise)
    if (budget.deadline === Infinity && !budget.context?.signals.length) return promise
    const sentAt = now()
    return new BudgetRace(promise, budget, (cause) => {
      const stopped = stoppedWhileRunning(cause, budget, sentAt)
      void this.#cancel(inFlight, cause.kind, 'cancel', (serverError) => keepAsCause(stopped, serverError))
      return stopped
    }).promise
  }

  #transactionStatus(): TransactionStatus {
    const status = this.#client.getTransactionStatus()
    return status === 'T' || status === 'E' ? status : 'I'
  }

  /** Tracks a promise-based statement (control statements, cursor reads) as the one in flight. */
  #track<T>(promise: Promise<T>): Promise<T> {
    this.#trackInFlight(promise)
    return promise
  }

  #trackInFlight(promise: Promise<unknown>): InFlight {
    const inFlight: InFlight = { whenEnded: () => promise.then(noError, (error: unknown) => error) }
    this.statementStarted(inFlight)
    promise.then(
      () => this.statementEnded(inFlight, undefined),
      (error: unknown) => this.statementEnded(inFlight, error),
    )
    return inFlight
  }
}

/** What a rollback answers: it has no rows, and whether it ran or the session's destruction did it is the session's business. */
const ROLLED_BACK: PgQueryResult<unknown> = Object.freeze({ command: 'ROLLBACK', rowCount: null, rows: [] })

function noError(): undefined {
  return undefined
}

function asIs<T>(value: T): T {
  return value
}
