import { InvalidOptionError } from '../errors/invalid-option-error.js'
import type { Canceller, CancelOutcome } from './canceller.js'
import { carryDeadline, CLOSE_CHECK_MS, type CarriedStatement } from './deadline-carrier.js'
import type { StatementTimeoutCache, StatementTimeoutChange, TransactionStatus } from './statement-timeout-cache.js'

/**
 * What sits between the pool and Postgres, as the `pooler` option names it:
 * - `none`: a direct connection (or a pooler in session mode that passes the
 *   backend's own pid through, which PgBouncer does not);
 * - `pgbouncer-session`: PgBouncer in session pooling: one server connection
 *   per client for the client's life, but the pid and key are PgBouncer's;
 * - `pgbouncer-transaction`: PgBouncer in transaction pooling: the server
 *   connection changes between transactions, so no session setting is ours.
 *
 * @example
 * ```ts
 * new GovernedPostgresDialect({ pool, pooler: 'pgbouncer-transaction' })
 * ```
 */
export type PoolerMode = 'none' | 'pgbouncer-session' | 'pgbouncer-transaction'

/**
 * The `pooler` option: a {@link PoolerMode}, or one with its settings.
 * `deadlineOnServerClock` (transaction pooling only; default false): a
 * statement outside a transaction carries its deadline as a wall-clock
 * instant that the server compares with its own clock as the statement
 * starts, so that one that waited in PgBouncer's queue is stopped at its
 * deadline all the same, and one whose deadline passed there never runs.
 * It costs a SELECT per statement instead of a SET (README, "Behind
 * PgBouncer", has the figures) and assumes clocks in sync. Without it, the
 * close at the deadline and the server's close check stop such a statement
 * a few milliseconds after the deadline, but it has run.
 *
 * @example
 * ```ts
 * new GovernedPostgresDialect({ pool, pooler: { mode: 'pgbouncer-transaction', deadlineOnServerClock: true } })
 * ```
 */
export type PoolerOption = PoolerMode | { readonly mode: PoolerMode; readonly deadlineOnServerClock?: boolean | undefined }

/** Every accepted value of {@link PoolerMode}. */
export const POOLER_MODES: readonly PoolerMode[] = Object.freeze(['none', 'pgbouncer-session', 'pgbouncer-transaction'])

/**
 * How the sessions of one pool carry statement_timeout and cancel a
 * statement, chosen once by the pool's {@link PoolerMode}; the session asks
 * it at the one place a SET is decided and the one place a cancel is sent,
 * so the rest of the session knows nothing of poolers.
 *
 * @example
 * ```ts
 * const strategy = sessionStrategyFor('pgbouncer-transaction')
 * strategy.timeoutChange(cache, 500, 'I') // undefined: a session SET would leak to other clients
 * strategy.carry('select pg_sleep(5)', [], now() + 300, 'I') // { kind: 'simple', text: 'set local statement_timeout = 300; set local ...; select pg_sleep(5)', prefixCount: 2 }
 * await strategy.cancel(canceller, client.processID, client.secretKey) // a protocol CancelRequest, routed by PgBouncer
 * ```
 */
export interface SessionStrategy {
  readonly pooler: PoolerMode
  /** Whether cancels go over the control connection (`pg_cancel_backend`), which is then worth opening early. */
  readonly usesControlConnection: boolean
  /**
   * How long a cancelled statement may run on before the cancel is sent
   * again: `firstMs`, doubling each time up to `maxMs`.
   */
  readonly cancelAgainAfter: { readonly firstMs: number; readonly maxMs: number }
  /** The SET to send before a statement with `stepMs` of budget, or undefined for none. */
  timeoutChange(cache: StatementTimeoutCache, stepMs: number | 'default', status: TransactionStatus): StatementTimeoutChange | undefined
  /**
   * The statement with its deadline carried on the same round trip, or
   * undefined for none (see {@link carryDeadline}). A statement so carried is
   * stopped by the server at its deadline; at the deadline the session closes
   * its connection instead of cancelling, which also drops it if PgBouncer
   * still holds it in its queue (there a cancel is dropped, and the statement
   * would run once a server connection frees up).
   */
  carry(sql: string, parameters: ReadonlyArray<unknown>, deadline: number, status: TransactionStatus): CarriedStatement | undefined
  /**
   * The server refused the close check a carried statement sets
   * ({@link isCloseCheckRefused}): this pool's statements carry none from now on.
   */
  closeCheckRefused(): void
  /** Whether {@link SessionStrategy.carry} can carry anything at all: a direct session asks nothing per statement. */
  readonly carriesDeadlines: boolean
  /** Whether a caller's own SET of statement_timeout is read back from the server, in this transaction status. */
  learnsCallerTimeout(status: TransactionStatus): boolean
  /** Cancels whatever the session `pid` runs. */
  cancel(canceller: Canceller, pid: number, secretKey: number | null | undefined): Promise<CancelOutcome>
  /** Ends the session `pid` (Kysely's 'kill session'); the caller destroys the connection after it. */
  terminate(canceller: Canceller, pid: number, secretKey: number | null | undefined): Promise<CancelOutcome>
}

/**
 * PgBouncer drops a CancelRequest for a client that waits in its queue for a
 * server connection ("cancel request for idle client", measured with 1.18),
 * so a statement queued there at its deadline starts later with nothing
 * cancelling it: repeat often, without backing off. A repeat for a queued
 * client costs PgBouncer one accept and close, and none is sent once our
 * statement has ended.
 */
const POOLER_CANCEL_AGAIN_AFTER = Object.freeze({ firstMs: 20, maxMs: 20 })

/** Direct: a cached session SET, `pg_cancel_backend` on the control connection (protocol cancel as fallback). */
const DIRECT: SessionStrategy = Object.freeze<SessionStrategy>({
  pooler: 'none',
  usesControlConnection: true,
  // A cancel that reaches the backend before its statement is dropped by the server: rare, so back off.
  cancelAgainAfter: Object.freeze({ firstMs: 50, maxMs: 1_000 }),
  timeoutChange: (cache, stepMs, status) => cache.change(stepMs, status),
  carry: () => undefined,
  closeCheckRefused: () => undefined,
  carriesDeadlines: false,
  learnsCallerTimeout: () => true,
  cancel: (canceller, pid, secretKey) => canceller.cancel(pid, secretKey),
  terminate: (canceller, pid, secretKey) => canceller.terminate(pid, secretKey),
})

/**
 * Behind PgBouncer the pid is PgBouncer's, so a `pg_cancel_backend` would
 * name no backend (or a stranger's): only the protocol CancelRequest, which
 * PgBouncer routes, is sent, and no `pg_terminate_backend` either (Kysely's
 * 'kill session' cancels the statement; the session destroys the
 * connection). The two pooling modes differ in what outlives a transaction:
 *
 * - session pooling: the server connection is the client's for its life and
 *   PgBouncer resets it (server_reset_query) when the client leaves, so the
 *   cached session SET is safe;
 * - transaction pooling: a session SET would stay on a server connection
 *   that serves other clients next (measured: their statements were killed
 *   by our timeouts). So statement_timeout is carried by `SET LOCAL` inside
 *   an explicit transaction, and outside one by {@link carryDeadline} (the
 *   SET LOCAL in the statement's own implicit transaction, with the close
 *   check) for plain DML; else by nothing, and our protocol cancel stops it,
 *   with a role's own statement_timeout and client_connection_check_interval
 *   as the server-side backstop (README, "Behind PgBouncer"). A caller's own
 *   session SET is not read back there: the read-back may run on another
 *   server connection, and the SET is not ours to keep anyway.
 */
function pgbouncerStrategy(pooler: 'pgbouncer-session' | 'pgbouncer-transaction', onServerClock = false): SessionStrategy {
  const transactionPooling = pooler === 'pgbouncer-transaction'
  // Per pool: a server that refuses the close check is asked once.
  let settings = Object.freeze({ onServerClock, closeCheckMs: CLOSE_CHECK_MS as number | undefined })
  return Object.freeze<SessionStrategy>({
    pooler,
    usesControlConnection: false,
    cancelAgainAfter: POOLER_CANCEL_AGAIN_AFTER,
    timeoutChange: transactionPooling
      ? (cache, stepMs, status) => (status === 'T' ? cache.change(stepMs, status) : undefined)
      : (cache, stepMs, status) => cache.change(stepMs, status),
    carry: transactionPooling ? (sql, parameters, deadline, status) => (status === 'I' ? carryDeadline(sql, parameters, deadline, settings) : undefined) : () => undefined,
    closeCheckRefused: () => {
      settings = Object.freeze({ onServerClock, closeCheckMs: undefined })
    },
    carriesDeadlines: transactionPooling,
    learnsCallerTimeout: transactionPooling ? (status) => status !== 'I' : () => true,
    cancel: (canceller, pid, secretKey) => canceller.protocolCancel(pid, secretKey),
    terminate: (canceller, pid, secretKey) => canceller.protocolCancel(pid, secretKey),
  })
}

/**
 * Startup parameters node-postgres sends that PgBouncer refuses unless they
 * are in its `ignore_startup_parameters` (it tracks only client_encoding,
 * DateStyle, TimeZone, standard_conforming_strings and application_name).
 */
const REFUSED_BY_PGBOUNCER = ['statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout', 'options', 'replication'] as const

/**
 * The strategy of `pooler` (default `none`), checked against the startup
 * parameters the pool's clients will send (`connectionParameters` of a
 * client made with the pool's options): behind PgBouncer, one it refuses
 * fails here with what to change instead of at the first connect with
 * `08P01 unsupported startup parameter`. Behind PgBouncer each call makes a
 * strategy of its own: it keeps what it learns of the server for one pool.
 *
 * @example
 * ```ts
 * const strategy = sessionStrategyFor(config.pooler, new pg.Client(pool.options).connectionParameters)
 * ```
 */
export function sessionStrategyFor(option: unknown, connectionParameters?: object): SessionStrategy {
  const { mode: pooler, onServerClock } = poolerOf(option)
  const strategy = pooler === 'none' ? DIRECT : pgbouncerStrategy(pooler, onServerClock)
  if (strategy !== DIRECT && connectionParameters) {
    const given = connectionParameters as Record<string, unknown>
    const refused = REFUSED_BY_PGBOUNCER.filter((name) => given[name] !== undefined && given[name] !== null && given[name] !== false && given[name] !== '')
    if (refused.length > 0) throw new InvalidOptionError('pool', refusedStartupParameters(refused, strategy.pooler))
  }
  return strategy
}

/** The `pooler` option, checked: its mode, and whether the deadline is carried on the server's clock. */
function poolerOf(option: unknown): { mode: PoolerMode; onServerClock: boolean } {
  const object = typeof option === 'object' && option !== null ? (option as { mode?: unknown; deadlineOnServerClock?: unknown }) : undefined
  const mode = object ? object.mode : option
  if (mode !== undefined && !POOLER_MODES.includes(mode as PoolerMode)) {
    throw new InvalidOptionError(object ? 'pooler.mode' : 'pooler', `must be one of ${POOLER_MODES.map((m) => `'${m}'`).join(', ')}; got ${String(mode)}`)
  }
  const onServerClock = object?.deadlineOnServerClock
  if (onServerClock !== undefined && typeof onServerClock !== 'boolean') {
    throw new InvalidOptionError('pooler.deadlineOnServerClock', `must be a boolean; got ${String(onServerClock)}`)
  }
  if (onServerClock === true && mode !== 'pgbouncer-transaction') {
    throw new InvalidOptionError('pooler.deadlineOnServerClock', `applies to mode 'pgbouncer-transaction' only (a session SET carries the deadline in the others); got mode ${String(mode)}`)
  }
  return { mode: (mode as PoolerMode | undefined) ?? 'none', onServerClock: onServerClock === true }
}

/** What to tell a user whose pool sends startup parameters PgBouncer refuses. */
export function refusedStartupParameters(names: readonly string[], pooler: PoolerMode | undefined): string {
  const list = names.join(', ')
  const timeout = names.includes('statement_timeout')
    ? pooler === 'pgbouncer-transaction'
      ? ' pg-governor carries statement_timeout itself (SET LOCAL inside transactions); for a server-side backstop set it on the role (ALTER ROLE ... SET statement_timeout) or use PgBouncer\'s query_timeout.'
      : ' pg-governor sets statement_timeout itself from each deadline.'
    : ''
  return (
    `PgBouncer refuses the startup parameter${names.length > 1 ? 's' : ''} ${list} (08P01 unsupported startup parameter): ` +
    `remove ${names.length > 1 ? 'them' : 'it'} from the pool's options (or its connection string), or list ${names.length > 1 ? 'them' : 'it'} in PgBouncer's ignore_startup_parameters.` +
    timeout
  )
}
