import type { ControlConnectionOptions } from '../governor/governor-parts.js'
import type { AbortableOperationOptions, DatabaseConnection } from 'kysely'
import type { AdmissionOptions } from '../admission/admission-policy.js'
import type { CircuitBreakerOptions } from '../admission/circuit-breaker.js'
import type { Criticality } from '../context/criticality.js'
import type { GovernorLogger, LoggingOptions } from '../telemetry/logging.js'
import type { QueryPolicy } from '../context/policy-registry.js'
import type { PgClientConstructor, PgCursorConstructor, PgPool } from '../session/pg-types.js'
import type { PoolerOption } from '../session/session-strategy.js'
import type { WarmConnectionsOptions } from '../governor/warm-connections.js'
import type { FleetOptions } from '../governor/fleet-options.js'
import type { RetryOptions } from '../retry/retry-options.js'

/**
 * Options of {@link GovernedPostgresDialect}: Kysely's `PostgresDialectConfig`
 * (`pool`, `cursor`, `controlClient`, `onCreateConnection`,
 * `onReserveConnection`) plus governance.
 *
 * @example
 * ```ts
 * const config: GovernedPostgresDialectConfig = {
 *   pool: new pg.Pool({ connectionString, max: 10 }),
 *   cursor: Cursor,
 *   defaultTimeoutMs: 5_000,
 *   policies: { payment: { timeoutMs: 3_000, criticality: 'critical' } },
 * }
 * ```
 */
export interface GovernedPostgresDialectConfig {
  /** A pg Pool, or a function that makes one (called once, at the first query). Give the dialect a pool of its own. */
  readonly pool: PgPool | ((options?: AbortableOperationOptions) => Promise<PgPool>)
  /** `pg-cursor`'s Cursor, for `.stream()`. */
  readonly cursor?: PgCursorConstructor | undefined
  /** The pg `Client` used for the control connection; the pool's `Client` by default. */
  readonly controlClient?: PgClientConstructor | undefined
  /** Called once for each new connection, as in Kysely's PostgresDialect. */
  readonly onCreateConnection?: ((connection: DatabaseConnection, options?: AbortableOperationOptions) => Promise<void>) | undefined
  /** Called each time a connection is taken from the pool, as in Kysely's PostgresDialect. */
  readonly onReserveConnection?: ((connection: DatabaseConnection, options?: AbortableOperationOptions) => Promise<void>) | undefined

  /**
   * Budget of a statement (and of a wait for a connection) that has no shorter
   * deadline, in milliseconds. Default 30 000. `null` gives such statements no
   * deadline and no statement_timeout of ours.
   */
  readonly defaultTimeoutMs?: number | null | undefined
  /** Criticality of work that names none. Default `critical`, as in the SRE book. */
  readonly defaultCriticality?: Criticality | undefined
  /** Policies by domain (`withQueryContext({ domain })`), changeable later through `dialect.policies`. */
  readonly policies?: Readonly<Record<string, QueryPolicy>> | undefined
  /** Load shedding by criticality: thresholds, reserve, queue bound, feasibility. */
  readonly admission?: AdmissionOptions | undefined
  /** The breaker on connection-level failures (refused, too many clients, shutdown, authentication). */
  readonly circuitBreaker?: CircuitBreakerOptions | undefined
  /** Emit a `leak` event, with the acquiring stack, for a connection held longer than this. Off by default. */
  readonly leakDetectionThresholdMs?: number | undefined
  /** A pino (or pino-compatible) logger for the dialect's events; nothing is logged without one. */
  readonly logger?: GovernorLogger | undefined
  /** What the logger writes beyond the events (a slow-query threshold). */
  readonly logging?: LoggingOptions | undefined
  /**
   * Prefix every statement with a sqlcommenter-style comment
   * (`/*criticality='critical',domain='payment',traceparent='…'*\/`) so that
   * pg_stat_activity shows who runs what. Off by default.
   */
  readonly sqlComment?: boolean | undefined
  /**
   * Released connections the dialect keeps for the next query instead of
   * handing them back to pg-pool at once: a kept connection no query takes
   * within `idleMs` (default 250) goes back, and every connection goes back at
   * its first release `leaseMs` (default 1000) after pg-pool lent it. `false`
   * returns every connection at once, as Kysely's PostgresDialect does. Off by
   * itself when the pool sets `maxUses`, which counts pg-pool check-outs.
   */
  readonly warmConnections?: WarmConnectionsOptions | false | undefined
  /**
   * What sits between the pool and Postgres. `'none'` (default): a direct
   * connection. `'pgbouncer-session'`: PgBouncer in session pooling (cancels
   * are protocol CancelRequests, which PgBouncer routes; its pids are not
   * backends'). `'pgbouncer-transaction'`: PgBouncer in transaction pooling
   * (also: statement_timeout as SET LOCAL, inside a transaction or in front
   * of a statement without parameters in the same simple query, never a
   * session SET that would outlive our transaction on a shared server
   * connection; at the deadline such a statement's connection is closed).
   * `{ mode: 'pgbouncer-transaction', deadlineOnServerClock: true }`: the
   * server works the time left out as the statement starts, so that time
   * spent in PgBouncer's queue counts too (a SELECT per statement; see
   * {@link PoolerOption}). Not detected: PgBouncer shows a client nothing of
   * its pool mode. See the README, "Behind PgBouncer".
   */
  readonly pooler?: PoolerOption | undefined
  /**
   * Many instances on one server: the expected number of instances for the
   * sizing check at start, and optional saturation sampling on the control
   * connection. See the README, "Many instances".
   */
  readonly fleet?: FleetOptions | undefined
  /** Retries of work that never reached the server (a failed connect), deadline-bound and budgeted per pool; `false`: none. */
  readonly retry?: RetryOptions | false | undefined
  /** The statement_timeout steps in milliseconds, strictly increasing. */
  readonly statementTimeoutLadderMs?: readonly number[] | undefined
  /** The dedicated connection that sends `pg_cancel_backend`. */
  readonly controlConnection?: ControlConnectionOptions | undefined
}
