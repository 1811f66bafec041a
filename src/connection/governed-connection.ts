import type { CompiledQuery, ControlConnectionProvider, DatabaseConnection, QueryResult } from 'kysely'
import { deadlineTimer, type DeadlineLink, type DeadlineWatcher } from '../context/deadline-timer.js'
import { now } from '../context/monotonic-clock.js'
import { currentBudget, refusalToStart, type QueryBudget as Budget } from '../context/query-budget.js'
import { DeadlineExceededError } from '../errors/deadline-exceeded-error.js'
import { QueryCanceledError } from '../errors/query-canceled-error.js'
import { errorForStop, type StopCause } from '../errors/stop-error.js'
import type { QueryPhase } from '../errors/query-phase.js'
import { traceOf, traceparent } from '../context/trace-context.js'
import type { AbortWatcher } from '../context/query-context.js'
import type { PolicyRegistry } from '../context/policy-registry.js'
import type { GovernorEvents, QueryOutcome } from '../telemetry/governor-events.js'
import type { Canceller, CancelOutcome } from './canceller.js'
import type { PgCursor, PgCursorConstructor, PgPoolClient, PgQueryResult } from './pg-types.js'
import type { StatementTimeoutLadder } from './statement-timeout-ladder.js'
import type { WarmConnection, WarmConnections } from './warm-connections.js'

/** What every connection of one dialect shares. */
export interface ConnectionServices {
  readonly canceller: Canceller
  readonly ladder: StatementTimeoutLadder
  readonly policies: PolicyRegistry
  readonly events: GovernorEvents
  readonly cursor: PgCursorConstructor | undefined
  /** Where released connections are kept warm, when that is on. */
  readonly warm: WarmConnections<GovernedConnection> | undefined
  /** Prefix statements with a sqlcommenter-style comment (criticality, domain, traceparent). */
  readonly sqlComment: boolean
}

/** Who hears that a connection went back to the pool (or was destroyed): the driver, which frees its permit. */
export interface ConnectionOwner {
  /** Keeps a clean released connection for the next query instead of pg-pool; false to hand it to pg-pool. */
  keep?(connection: GovernedConnection): boolean
  connectionReleased(connection: GovernedConnection, destroyed: boolean): void
}

/** A statement (or cursor read) on the wire, which a cancel must wait for. */
export interface InFlight {
  /** Resolves when the server has answered: with the error it ended with, or undefined. */
  whenEnded(): Promise<unknown>
}

type StatementTimeoutState = number | 'default' | 'unknown'

const QUERY_CANCELED = '57014'

/** Statements by which a caller sets statement_timeout itself (or resets every setting). */
const SETS_STATEMENT_TIMEOUT = /^\s*(?:set\s+(?:session\s+|local\s+)?statement_timeout\b|reset\s+(?:statement_timeout|all)\b|discard\s+all\b)/i

/** How long a cancelled statement may take to end before its connection is destroyed instead. */
const SETTLE_TIMEOUT_MS = 5_000

/** How long a cancelled statement may run on before the cancel is sent again; doubles each time, up to a second. */
const CANCEL_AGAIN_AFTER_MS = 50

/**
 * One pooled pg client, governed: every statement carries its deadline to the
 * server as statement_timeout (a SET only when the ladder step changes), is
 * rejected at its deadline or abort, and is cancelled on the server. A
 * cancelled connection is held until both the statement and the cancel have
 * settled, so a cancel never reaches the next statement.
 *
 * @example
 * ```ts
 * await db.connection().execute(async (conn) => {
 *   // Kysely hands out GovernedConnection instances; their statements are governed like any other.
 *   await sql`listen orders`.execute(conn)
 * })
 * ```
 */
export class GovernedConnection implements DatabaseConnection, WarmConnection {
  readonly #client: PgPoolClient
  readonly #services: ConnectionServices
  /** Session value of statement_timeout as far as we have set it. */
  #sessionTimeout: StatementTimeoutState = 'default'
  /** Value SET LOCAL in the current transaction; undefined when none was. */
  #localTimeout: StatementTimeoutState | undefined
  /** statement_timeout the caller set itself (ms, 0 = off), kept when stricter than ours. */
  #callerSessionTimeout: number | undefined
  #callerLocalTimeout: number | undefined
  /** Tracked from the driver for pg versions without getTransactionStatus(). */
  #inTransactionFlag = false
  /** A cancelled statement still draining; the next statement waits for it. */
  #settling: Promise<void> | undefined
  /** Why the connection must be destroyed instead of reused, if it must. */
  #discardReason: string | undefined
  /** The statement on the wire, for Kysely's cancelQuery/killSession. */
  #inFlight: InFlight | undefined
  /** When the driver last handed the connection out (monotonic ms), to measure use time. */
  checkedOutAt = 0
  /** @internal When pg-pool lent the client (monotonic ms). */
  leasedAt = 0
  /** @internal When the dialect last kept it warm (monotonic ms). */
  parkedAt = 0
  /** @internal In the dialect's warm stack now. */
  parked = false

  constructor(client: PgPoolClient, services: ConnectionServices) {
    this.#client = client
    this.#services = services
    // pg-pool takes its error listener off a client while it is checked out; a
    // backend killed between statements would then crash the process.
    client.on('error', (error) => {
      // A connection kept warm is idle: its failure is what pg-pool reports as 'error' for its own idle clients.
      if (this.parked) this.#services.events.emit('poolError', error)
      this.discard(`connection error: ${error.message}`)
    })
  }

  /** The server process id of this connection. */
  get pid(): number | undefined {
    return this.#client.processID ?? undefined
  }

  /** @internal The dialect's event hub. */
  get events(): GovernorEvents {
    return this.#services.events
  }

  /** The pg client, for advanced use (LISTEN, COPY). Do not release it yourself. */
  get client(): PgPoolClient {
    return this.#client
  }

  async executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    if (this.#settling) await this.#settling
    this.#assertUsable()
    const budget = currentBudget(this.#services.policies)
    const preparing = this.#prepare(budget)
    if (preparing) await preparing
    const { sql } = compiledQuery
    const text = this.#textOf(sql, budget)
    let result: PgQueryResult<R>
    try {
      // Without a SET nothing was awaited since the budget was taken: its clock reading is the send time.
      const sentAt = preparing ? now() : budget.startedAt
      result = await new StatementRun<R>(this, budget, compiledQuery.queryId?.queryId).start(this.#client, text, compiledQuery.parameters, sentAt)
    } catch (error) {
      throw withCallerStack(error, new Error())
    }
    if (SETS_STATEMENT_TIMEOUT.test(sql)) await this.#adoptCallerStatementTimeout(sql)
    return toQueryResult(result)
  }

  async *streamQuery<R>(compiledQuery: CompiledQuery, chunkSize: number): AsyncIterableIterator<QueryResult<R>> {
    const Cursor = this.#services.cursor
    if (!Cursor) {
      throw new Error("`cursor` is not present in your postgres dialect config. It's required to make streaming work in postgres.")
    }
    if (this.#settling) await this.#settling
    this.#assertUsable()
    const budget = currentBudget(this.#services.policies)
    await this.#prepare(budget)
    const text = this.#textOf(compiledQuery.sql, budget)
    const cursor: PgCursor<R> = this.#client.query(new Cursor<R>(text, compiledQuery.parameters.slice()))
    const watch = new StreamWatch(this, budget)
    let failure: unknown
    try {
      for (;;) {
        const rows = await watch.read(() => this.#track(cursor.read(chunkSize)))
        if (rows.length === 0) break
        yield { rows }
      }
    } catch (error) {
      failure = error
      throw error
    } finally {
      watch.detach()
      const outcome: QueryOutcome =
        failure === undefined ? 'ok' : failure instanceof DeadlineExceededError ? 'deadline_exceeded' : failure instanceof QueryCanceledError ? 'canceled' : 'error'
      reportStatement(this, budget, watch.sentAt, outcome, failure, compiledQuery.queryId?.queryId, text)
      if (watch.stopped) {
        // The cancel is draining: close the cursor after it, off the caller's path.
        void this.#afterSettling(() => cursor.close())
      } else {
        await cursor.close()
      }
    }
  }

  /** Kysely's 'cancel query' strategy. */
  async cancelQuery(_controlConnectionProvider: ControlConnectionProvider): Promise<void> {
    const inFlight = this.#inFlight
    if (inFlight) await this.cancelInFlight(inFlight, 'kysely', false)
  }

  /** Kysely's 'kill session' strategy: the connection is destroyed afterwards. */
  async killSession(_controlConnectionProvider: ControlConnectionProvider): Promise<void> {
    const inFlight = this.#inFlight
    if (inFlight) await this.cancelInFlight(inFlight, 'kysely', true)
  }

  /** The pid is known from the startup message; nothing to collect. */
  async collectSessionInfo(): Promise<void> {}

  /**
   * Cancels the statement behind `inFlight` on the server and keeps the
   * connection until both have settled. Resolves when they have.
   */
  cancelInFlight(inFlight: InFlight, reason: 'deadline' | 'abort' | 'kysely', kill: boolean): Promise<void> {
    const pid = this.pid
    if (pid === undefined) {
      this.discard('no backend pid to cancel')
      return Promise.resolve()
    }
    const { canceller, events } = this.#services
    const cancel = kill ? canceller.terminate(pid, this.#client.secretKey) : this.#cancelUntilEnded(pid, inFlight)
    const settled = Promise.allSettled([inFlight.whenEnded(), cancel]).then(([ended, sent]) => {
      const endError = ended.status === 'fulfilled' ? ended.value : undefined
      let outcome: CancelOutcome | undefined
      let error: unknown
      if (sent.status === 'rejected') {
        error = sent.reason
        this.discard(`cancel failed: ${String(error)}`)
      } else {
        outcome = sent.value
        if (kill) this.discard('session killed')
        else if (!outcome.confirmed && !isQueryCanceled(endError)) {
          // An unconfirmed protocol cancel may still be on its way: never let it meet the next statement.
          this.discard('unconfirmed protocol cancel')
        }
      }
      if (events.has('cancel')) events.emit('cancel', { pid, reason, outcome, error, destroyed: this.#discardReason !== undefined })
    })
    return this.#afterSettling(() => settled)
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
    const outcome = await canceller.cancel(pid, secretKey)
    let ended = false
    const whenEnded = inFlight.whenEnded().then(() => {
      ended = true
    })
    const giveUpAt = now() + SETTLE_TIMEOUT_MS
    for (let delayMs = CANCEL_AGAIN_AFTER_MS; ; delayMs = Math.min(delayMs * 2, 1_000)) {
      await endedOrElapsed(whenEnded, delayMs)
      if (ended || now() >= giveUpAt || this.#discardReason !== undefined) return outcome
      await canceller.cancel(pid, secretKey).catch(() => undefined)
    }
  }

  /**
   * Queues a step that must finish before the connection runs anything else or
   * goes back to the pool. The last step clears the queue.
   */
  #afterSettling(step: () => Promise<unknown>): Promise<void> {
    const previous = this.#settling ?? Promise.resolve()
    const tail: Promise<void> = previous
      .then(() => this.#boundedBySettleTimeout(step()))
      .then(
        () => {},
        (error: unknown) => this.discard(`cleanup failed: ${String(error)}`),
      )
      .then(() => {
        if (this.#settling === tail) this.#settling = undefined
      })
    this.#settling = tail
    return tail
  }

  /** Marks the connection to be destroyed when it is released (at once, when it is kept warm). */
  discard(reason: string): void {
    this.#discardReason ??= reason
    if (this.parked) this.#services.warm?.evict(this)
  }

  /** @internal Hands the client back to pg-pool: destroyed if it was discarded. */
  returnToPool(): void {
    if (this.#discardReason !== undefined) this.#client.release(new Error(`pg-governor discarded the connection: ${this.#discardReason}`))
    else this.#client.release()
  }

  /** Driver hook: a transaction began or ended through the driver. */
  transactionBoundary(state: 'begin' | 'end' | 'savepoint-rollback'): void {
    if (state === 'begin') {
      this.#inTransactionFlag = true
      this.#localTimeout = undefined
    } else if (state === 'end') {
      this.#inTransactionFlag = false
      this.#localTimeout = undefined
      this.#callerLocalTimeout = undefined
    } else if (this.#localTimeout !== undefined) {
      // ROLLBACK TO SAVEPOINT may have undone a SET LOCAL.
      this.#localTimeout = 'unknown'
    }
  }

  /**
   * Runs a transaction-control statement (begin, commit, rollback, savepoint):
   * after any draining cancel, without a deadline, so that a rollback always
   * gets through.
   */
  async executeControl(sql: string): Promise<PgQueryResult<unknown>> {
    if (this.#settling) await this.#settling
    this.#assertUsable()
    return this.#track(this.#client.query(sql))
  }

  /**
   * Hands the client back once nothing is draining: destroyed if it is marked
   * so, rolled back if it is inside a transaction, kept warm if `owner` keeps
   * it, else returned to pg-pool. `owner` hears when the client is back (or
   * gone), to free the admission permit.
   */
  release(owner: ConnectionOwner): void {
    if (this.#settling) {
      void this.#settling.then(() => this.release(owner))
      return
    }
    if (this.#discardReason !== undefined) {
      this.returnToPool()
      owner.connectionReleased(this, true)
      return
    }
    if (this.#inTransaction()) {
      this.#client.query('rollback').then(
        () => {
          this.transactionBoundary('end')
          this.#client.release()
          owner.connectionReleased(this, false)
        },
        (error: unknown) => {
          this.#client.release(error instanceof Error ? error : new Error(String(error)))
          owner.connectionReleased(this, true)
        },
      )
      return
    }
    if (!owner.keep?.(this)) this.#client.release()
    owner.connectionReleased(this, false)
  }

  /**
   * A statement that does not end even after its cancel (a hung server, a lost
   * packet) must not hold the connection forever: past the limit the connection
   * is destroyed instead of reused, which frees its slot.
   */
  #boundedBySettleTimeout(work: Promise<unknown>): Promise<unknown> {
    let timer: NodeJS.Timeout | undefined
    const limit = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.discard(`did not settle within ${SETTLE_TIMEOUT_MS} ms of its cancel`)
        resolve()
      }, SETTLE_TIMEOUT_MS)
    })
    return Promise.race([work, limit]).finally(() => clearTimeout(timer))
  }

  #assertUsable(): void {
    if (this.#discardReason !== undefined) {
      throw new Error(`pg-governor discarded this connection (${this.#discardReason}); it cannot run more statements`)
    }
  }

  /** The statement as sent: with the sqlcommenter prefix when that is on. */
  #textOf(sql: string, budget: Budget): string {
    return this.#services.sqlComment ? sqlComment(budget) + sql : sql
  }

  /**
   * Refuses a statement that cannot start, and brings statement_timeout to its
   * step. Returns a promise only when a SET is needed, so the usual statement
   * pays for no extra promise.
   */
  #prepare(budget: Budget): Promise<void> | undefined {
    const refusal = refusalToStart(budget)
    if (refusal) {
      reportStatement(this, budget, budget.startedAt, refusal instanceof QueryCanceledError ? 'canceled' : 'deadline_exceeded', refusal, undefined, undefined, 'before_start')
      throw refusal
    }
    const remaining = budget.remainingMs
    const status = this.#transactionStatus()
    if (status === 'E') return undefined // Every statement but rollback fails here anyway; a SET would too.
    const inTransaction = status === 'T'
    let wanted: number | 'default' = remaining === Infinity ? 'default' : this.#services.ladder.bucketFor(remaining)
    // A stricter statement_timeout the caller set on this session stays in force.
    const callers = inTransaction ? (this.#callerLocalTimeout ?? this.#callerSessionTimeout) : this.#callerSessionTimeout
    if (callers !== undefined && callers > 0 && (wanted === 'default' || callers < wanted)) wanted = callers
    const current = inTransaction ? (this.#localTimeout ?? this.#sessionTimeout) : this.#sessionTimeout
    if (current === wanted) return undefined
    return this.#setStatementTimeout(wanted, inTransaction)
  }

  async #setStatementTimeout(wanted: number | 'default', inTransaction: boolean): Promise<void> {
    // The value is a number we computed, never caller text.
    const value = wanted === 'default' ? 'default' : String(wanted)
    await this.#client.query(inTransaction ? `set local statement_timeout to ${value}` : `set statement_timeout to ${value}`)
    if (inTransaction) this.#localTimeout = wanted
    else this.#sessionTimeout = wanted
    const { events } = this.#services
    if (events.has('statementTimeout')) events.emit('statementTimeout', { pid: this.pid, valueMs: wanted, local: inTransaction })
  }

  /**
   * The caller ran its own SET/RESET of statement_timeout: learn the value the
   * server now has, so we keep it (when stricter than our step) instead of
   * overwriting it on the next statement.
   */
  async #adoptCallerStatementTimeout(sql: string): Promise<void> {
    const { rows } = await this.#client.query<{ ms: number }>(`select setting::int as ms from pg_settings where name = 'statement_timeout'`)
    const ms = rows[0]?.ms ?? 0
    const inTransaction = this.#transactionStatus() === 'T'
    if (/^\s*set\s+local\b/i.test(sql) && inTransaction) {
      this.#callerLocalTimeout = ms
      this.#localTimeout = ms
    } else if (/^\s*(reset|set\s+(session\s+)?statement_timeout\s+to\s+default)\b/i.test(sql) || /^\s*discard\b/i.test(sql)) {
      this.#callerSessionTimeout = undefined
      if (inTransaction) this.#localTimeout = ms
      else this.#sessionTimeout = 'default'
    } else {
      this.#callerSessionTimeout = ms
      if (inTransaction) this.#localTimeout = ms
      else this.#sessionTimeout = ms
    }
  }

  #transactionStatus(): 'I' | 'T' | 'E' {
    const status = this.#client.getTransactionStatus?.()
    if (status === 'I' || status === 'T' || status === 'E') {
      if (status === 'I') {
        this.#localTimeout = undefined
        this.#callerLocalTimeout = undefined
      }
      return status
    }
    return this.#inTransactionFlag ? 'T' : 'I'
  }

  #inTransaction(): boolean {
    return this.#transactionStatus() !== 'I'
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

  /** @internal Called by whatever ran a statement, when the server answered. */
  statementEnded(inFlight: InFlight, error: unknown): void {
    if (this.#inFlight === inFlight) this.#inFlight = undefined
    // The server ends the session after a FATAL error; the socket may close only after we
    // are released, so the pool would hand a dead client to the next caller.
    if (error !== undefined && isSessionEnding(error)) this.discard(`session ended: ${(error as Error).message}`)
  }

  /** @internal */
  statementStarted(inFlight: InFlight): void {
    this.#inFlight = inFlight
  }
}

/**
 * One statement on the wire, through pg's callback API so that a statement
 * costs one promise: the caller's. Settles it with pg's answer, or at the
 * deadline or abort with a typed error while the server-side cancel runs on;
 * the connection waits for `whenEnded()` before its next statement.
 */
class StatementRun<R> implements InFlight, DeadlineWatcher, AbortWatcher {
  deadlineLink: DeadlineLink | undefined = undefined
  readonly deadline: number
  readonly #connection: GovernedConnection
  readonly #budget: Budget
  readonly #queryId: string | undefined
  #sql: string | undefined
  #sentAt = 0
  #resolve!: (result: PgQueryResult<R>) => void
  #reject!: (error: unknown) => void
  /** The caller has its outcome. */
  #answered = false
  /** pg has called back. */
  #ended = false
  #endError: unknown
  #endWaiter: { readonly promise: Promise<unknown>; readonly resolve: (error: unknown) => void } | undefined

  constructor(connection: GovernedConnection, budget: Budget, queryId: string | undefined) {
    this.#connection = connection
    this.#budget = budget
    this.#queryId = queryId
    this.deadline = budget.deadline
  }

  start(client: PgPoolClient, sql: string, parameters: ReadonlyArray<unknown>, sentAt: number): Promise<PgQueryResult<R>> {
    return new Promise<PgQueryResult<R>>((resolve, reject) => {
      this.#resolve = resolve
      this.#reject = reject
      this.#sql = sql
      this.#sentAt = sentAt
      if (this.deadline < Infinity) deadlineTimer.add(this)
      this.#budget.context?.watch(this)
      this.#connection.statementStarted(this)
      client.query<R>(sql, parameters, this.#callback)
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
    this.#connection.statementEnded(this, this.#endError)
    this.#endWaiter?.resolve(this.#endError)
    if (!this.#answer()) return
    if (!error) {
      this.#report('ok', undefined)
      this.#resolve(result)
    } else if (isStatementTimeout(error) && now() >= this.#budget.deadline - 1) {
      // Our statement_timeout is never below the remaining budget, so one that fires earlier is the caller's own.
      const stopped = stoppedWhileRunning({ kind: 'deadline' }, this.#budget, this.#sentAt, error)
      this.#report('deadline_exceeded', stopped)
      this.#reject(stopped)
    } else {
      this.#report('error', error)
      this.#reject(error)
    }
  }

  #report(outcome: QueryOutcome, error: unknown): void {
    reportStatement(this.#connection, this.#budget, this.#sentAt, outcome, error, this.#queryId, this.#sql)
  }

  onDeadline(): void {
    this.#stop({ kind: 'deadline' })
  }

  onAbort(reason: unknown): void {
    this.#stop({ kind: 'abort', reason })
  }

  #stop(cause: StopCause): void {
    if (!this.#answer()) return
    const stopped = stoppedWhileRunning(cause, this.#budget, this.#sentAt)
    this.#report(cause.kind === 'deadline' ? 'deadline_exceeded' : 'canceled', stopped)
    this.#reject(stopped)
    void this.#connection.cancelInFlight(this, cause.kind, false)
  }

  /** Marks the caller answered; false when it already was. */
  #answer(): boolean {
    if (this.#answered) return false
    this.#answered = true
    if (this.deadline < Infinity) deadlineTimer.delete(this)
    this.#budget.context?.unwatch(this)
    return true
  }
}

/**
 * The deadline and signals of a streaming query. Between reads the backend is
 * idle (a cancel would be a no-op), so a stop there takes effect at the next
 * read; during a read the backend is cancelled.
 */
class StreamWatch implements DeadlineWatcher, AbortWatcher {
  deadlineLink: DeadlineLink | undefined = undefined
  readonly deadline: number
  readonly #connection: GovernedConnection
  readonly #budget: Budget
  /** When the cursor's query was sent (monotonic ms). */
  readonly sentAt = now()
  #reading: { readonly promise: Promise<unknown>; readonly reject: (error: Error) => void } | undefined
  #stopError: Error | undefined

  constructor(connection: GovernedConnection, budget: Budget) {
    this.#connection = connection
    this.#budget = budget
    this.deadline = budget.deadline
    if (this.deadline < Infinity) deadlineTimer.add(this)
    budget.context?.watch(this)
  }

  get stopped(): boolean {
    return this.#stopError !== undefined
  }

  /**
   * Starts the next fetch, unless the stream was stopped between fetches: then
   * no fetch is sent at all (the backend is idle in its suspended portal, and
   * a fetch would run the query on for nobody).
   */
  read<R>(fetch: () => Promise<R[]>): Promise<R[]> {
    if (this.#stopError) return Promise.reject(this.#stopError)
    const promise = fetch()
    return new Promise<R[]>((resolve, reject) => {
      const reading = { promise, reject }
      this.#reading = reading
      promise.then(
        (rows) => {
          if (this.#reading !== reading) return
          this.#reading = undefined
          resolve(rows)
        },
        (error: unknown) => {
          if (this.#reading !== reading) return
          this.#reading = undefined
          reject(
            isStatementTimeout(error) && now() >= this.deadline - 1
              ? stoppedWhileRunning({ kind: 'deadline' }, this.#budget, this.sentAt, error)
              : error,
          )
        },
      )
    })
  }

  onDeadline(): void {
    this.#stop({ kind: 'deadline' })
  }

  onAbort(reason: unknown): void {
    this.#stop({ kind: 'abort', reason })
  }

  detach(): void {
    deadlineTimer.delete(this)
    this.#budget.context?.unwatch(this)
  }

  #stop(cause: StopCause): void {
    if (this.#stopError) return
    const error = stoppedWhileRunning(cause, this.#budget, this.sentAt)
    this.#stopError = error
    this.detach()
    const reading = this.#reading
    if (reading) {
      this.#reading = undefined
      reading.reject(error)
      const ended = reading.promise.then(noError, (error: unknown) => error)
      void this.#connection.cancelInFlight({ whenEnded: () => ended }, cause.kind, false)
    }
  }
}

/** The `query` event of a statement that ran (or was stopped on the wire); built only when someone listens. */
function reportStatement(
  connection: GovernedConnection,
  budget: Budget,
  sentAt: number,
  outcome: QueryOutcome,
  error: unknown,
  queryId: string | undefined,
  sql: string | undefined,
  phase: QueryPhase = 'running',
): void {
  const { events } = connection
  if (!events.has('query')) return
  events.emit('query', {
    outcome,
    criticality: budget.criticality,
    domain: budget.domain,
    phase,
    budgetMs: budget.remainingMs,
    waitedMs: sentAt - budget.startedAt,
    ranMs: now() - sentAt,
    pid: connection.pid,
    sqlState: sqlStateOf(error) ?? sqlStateOf((error as { cause?: unknown } | undefined)?.cause),
    queryId,
    sql,
    context: budget.context,
    error,
  })
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

/** The typed error for a statement stopped on the wire, with where its time went. */
function stoppedWhileRunning(cause: StopCause, budget: Budget, sentAt: number, serverError?: unknown): Error {
  return errorForStop(cause, { phase: 'running', budgetMs: budget.remainingMs, waitedMs: sentAt - budget.startedAt, ranMs: now() - sentAt, serverError })
}

/**
 * A sqlcommenter-style comment, so that pg_stat_activity shows who runs what.
 * Keys sorted, values URL-encoded and quoted as the sqlcommenter spec asks;
 * domains are validated to safe characters, so nothing can close the comment.
 */
function sqlComment(budget: Budget): string {
  const fields = [`criticality='${budget.criticality}'`]
  if (budget.domain !== undefined) fields.push(`domain='${encodeURIComponent(budget.domain)}'`)
  const trace = traceOf(budget.context)
  if (trace) fields.push(`traceparent='${encodeURIComponent(traceparent(trace))}'`)
  return `/*${fields.join(',')}*/ `
}

function sqlStateOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null | undefined)?.code
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined
}

function noError(): undefined {
  return undefined
}

function toQueryResult<R>(result: PgQueryResult<R>): QueryResult<R> {
  const { command, rowCount, rows } = result
  if (command === 'ROLLBACK' || command === 'COMMIT') {
    return { rows: [{ command } as R] }
  }
  return {
    numAffectedRows:
      command === 'INSERT' || command === 'UPDATE' || command === 'DELETE' || command === 'MERGE' ? BigInt(rowCount ?? 0) : undefined,
    rows: rows ?? [],
  }
}

/** Appends the caller's frames to a pg error, whose own stack ends in pg's protocol parser. */
function withCallerStack(error: unknown, caller: Error): unknown {
  if (error instanceof Error && typeof error.stack === 'string' && caller.stack) {
    error.stack += `\n${caller.stack.split('\n').slice(1).join('\n')}`
  }
  return error
}

function isSessionEnding(error: unknown): boolean {
  const { severity, code } = (error ?? {}) as { severity?: unknown; code?: unknown }
  if (severity === 'FATAL' || severity === 'PANIC') return true
  if (typeof code === 'string') return code.startsWith('08') || code.startsWith('57P')
  // pg's own errors for a dead socket carry no SQLSTATE.
  return error instanceof Error && /Connection terminated|connection error|not queryable/i.test(error.message)
}

function isQueryCanceled(error: unknown): boolean {
  return (error as { code?: unknown } | null)?.code === QUERY_CANCELED
}

function isStatementTimeout(error: unknown): boolean {
  return isQueryCanceled(error) && /statement timeout/.test((error as Error).message)
}
