import { resolveAdmissionPolicy, type AdmissionOptions } from '../admission/admission-policy.js'
import { CircuitBreaker, type CircuitBreakerOptions } from '../admission/circuit-breaker.js'
import type { Criticality } from '../context/criticality.js'
import { PolicyRegistry, type QueryPolicy } from '../context/policy-registry.js'
import { enableOpenTelemetryTraces } from '../context/trace-context.js'
import { InvalidOptionError } from '../errors/invalid-option-error.js'
import { resolveRetryOptions, type RetryOptions } from '../retry/retry-options.js'
import type { PgClientConstructor, PgCursorConstructor, PgPool } from '../session/pg-types.js'
import { sessionStrategyFor, type PoolerOption } from '../session/session-strategy.js'
import { StatementTimeoutLadder } from '../session/statement-timeout-ladder.js'
import { GovernorEvents } from '../telemetry/governor-events.js'
import { attachLogger, type GovernorLogger, type LoggingOptions } from '../telemetry/logging.js'
import { resolveFleetOptions, type FleetOptions } from './fleet-options.js'
import type { ControlConnectionOptions, GovernorParts } from './governor-parts.js'
import { LeakDetector } from './leak-detector.js'
import { poolMax } from './pool-max.js'
import { WarmConnections, type WarmConnectionsOptions } from './warm-connections.js'

/**
 * The governance options every adapter takes (the Kysely dialect today):
 * deadlines and policies, admission, the breaker, telemetry, the pooler mode,
 * the fleet, retries. {@link resolveGovernorParts} validates them into the
 * {@link GovernorParts} a {@link Governor} is built from.
 *
 * @example
 * ```ts
 * const options: GovernorOptions = {
 *   defaultTimeoutMs: 5_000,
 *   policies: { payment: { timeoutMs: 3_000, criticality: 'critical' } },
 *   admission: { reserve: 2 },
 * }
 * ```
 */
export interface GovernorOptions {
  /** `pg-cursor`'s Cursor, for streaming. */
  readonly cursor?: PgCursorConstructor | undefined
  /** The pg `Client` used for the control connection; the pool's `Client` by default. */
  readonly controlClient?: PgClientConstructor | undefined
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

/**
 * Validates `options` into the parts of a {@link Governor}, or throws
 * {@link InvalidOptionError} and changes nothing: a bad option fails at
 * construction, not at the first query. `pool`, when the adapter has it
 * already, is checked against the options (the reserve below its `max`, the
 * startup parameters its clients would send through a pooler). A logger in
 * the options is attached to the parts' events.
 *
 * @example
 * ```ts
 * const parts = resolveGovernorParts({ defaultTimeoutMs: 5_000 }, pool)
 * const governor = new Governor(pool, parts)
 * ```
 */
export function resolveGovernorParts(options: GovernorOptions, pool?: PgPool): GovernorParts {
  const events = new GovernorEvents()
  const policies = new PolicyRegistry(options)
  const ladder = new StatementTimeoutLadder(options.statementTimeoutLadderMs)
  const admission = resolveAdmissionPolicy(options.admission)
  const max = pool ? poolMax(pool) : undefined
  if (max !== undefined && admission.reserve >= max) {
    throw new InvalidOptionError('admission.reserve', `must be below the pool's max (${max}); got ${admission.reserve}`)
  }
  new CircuitBreaker(options.circuitBreaker)
  if (options.leakDetectionThresholdMs !== undefined) new LeakDetector(options.leakDetectionThresholdMs, events).stop()
  const warm = WarmConnections.resolve(options.warmConnections)
  const fleet = resolveFleetOptions(options.fleet)
  const retry = resolveRetryOptions(options.retry)
  if (options.sqlComment !== undefined && typeof options.sqlComment !== 'boolean') {
    throw new InvalidOptionError('sqlComment', `must be a boolean; got ${String(options.sqlComment)}`)
  }
  const PoolClient = pool ? (pool.Client ?? options.controlClient) : undefined
  sessionStrategyFor(options.pooler, PoolClient && pool ? (new PoolClient({ ...pool.options }) as { connectionParameters?: object }).connectionParameters : undefined)
  if (options.logger !== undefined) attachLogger(events, options.logger, options.logging)
  // Trace ids for log lines and comments come from @opentelemetry/api when it is installed.
  if (options.logger !== undefined || options.sqlComment) void enableOpenTelemetryTraces()
  return Object.freeze({
    policies,
    ladder,
    events,
    admission,
    warm,
    circuitBreaker: options.circuitBreaker,
    fleet,
    retry,
    leakDetectionThresholdMs: options.leakDetectionThresholdMs,
    cursor: options.cursor,
    sqlComment: options.sqlComment,
    controlClient: options.controlClient,
    controlConnection: options.controlConnection,
    pooler: options.pooler,
  })
}
