import {
  PostgresAdapter,
  PostgresIntrospector,
  PostgresQueryCompiler,
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  type Kysely,
  type QueryCompiler,
} from 'kysely'
import { resolveAdmissionPolicy, type ResolvedAdmissionPolicy } from '../admission/admission-policy.js'
import { CircuitBreaker } from '../admission/circuit-breaker.js'
import { PolicyRegistry } from '../context/policy-registry.js'
import { LeakDetector } from '../governor/leak-detector.js'
import { GovernorError } from '../errors/governor-error.js'
import { enableOpenTelemetryTraces } from '../context/trace-context.js'
import { attachLogger } from '../telemetry/logging.js'
import { StatementTimeoutLadder } from '../session/statement-timeout-ladder.js'
import { InvalidOptionError } from '../errors/invalid-option-error.js'
import { WarmConnections, type WarmConnectionsSettings } from '../governor/warm-connections.js'
import { GovernorEvents } from '../telemetry/governor-events.js'
import { resolveFleetOptions, type ResolvedFleetOptions } from '../governor/fleet-options.js'
import { resolveRetryOptions, type RetrySettings } from '../retry/retry-options.js'
import { GovernedDriver } from './governed-driver.js'
import { sessionStrategyFor } from '../session/session-strategy.js'
import type { PoolStats } from '../governor/pool-stats.js'
import { poolMax } from '../governor/pool-max.js'
import type { GovernedPostgresDialectConfig } from './governed-postgres-dialect-config.js'

/**
 * A drop-in for Kysely's `PostgresDialect` that governs every query: the
 * ambient deadline and signal of {@link withQueryContext} reach each statement,
 * an abandoned statement is cancelled on the server, statement_timeout backs
 * the deadline up on the server, and waiting for a connection is bounded and
 * ordered by criticality.
 *
 * Options are validated and frozen at construction; a malformed one throws
 * {@link InvalidOptionError}.
 *
 * @example
 * ```ts
 * import { Kysely } from 'kysely'
 * import pg from 'pg'
 * import Cursor from 'pg-cursor'
 * import { GovernedPostgresDialect, withQueryContext } from 'pg-governor'
 *
 * const db = new Kysely<Database>({
 *   dialect: new GovernedPostgresDialect({ pool: new pg.Pool({ connectionString }), cursor: Cursor }),
 * })
 * await withQueryContext({ timeoutMs: 500 }, () => db.selectFrom('person').selectAll().execute())
 * ```
 */
export class GovernedPostgresDialect implements Dialect {
  readonly #config: GovernedPostgresDialectConfig
  readonly #ladder: StatementTimeoutLadder
  readonly #admission: ResolvedAdmissionPolicy
  readonly #warm: WarmConnectionsSettings | undefined
  readonly #fleet: ResolvedFleetOptions
  readonly #retry: RetrySettings
  readonly #drivers: GovernedDriver[] = []
  /** Policies by domain; change them at runtime with `set` and `delete`. */
  readonly policies: PolicyRegistry
  /** Typed listeners for queries, cancels and statement_timeout changes. */
  readonly events = new GovernorEvents()

  constructor(config: GovernedPostgresDialectConfig) {
    if (config === null || typeof config !== 'object') {
      throw new InvalidOptionError('config', 'must be an object with at least `pool`')
    }
    const { pool } = config
    if (pool === null || (typeof pool !== 'object' && typeof pool !== 'function')) {
      throw new InvalidOptionError('pool', 'must be a pg Pool or a function returning one')
    }
    if (typeof pool === 'object' && typeof pool.connect !== 'function') {
      throw new InvalidOptionError('pool', 'must be a pg Pool (it has no connect method)')
    }
    this.policies = new PolicyRegistry(config)
    this.#ladder = new StatementTimeoutLadder(config.statementTimeoutLadderMs)
    this.#admission = resolveAdmissionPolicy(config.admission)
    const max = typeof pool === 'object' ? poolMax(pool) : undefined
    if (max !== undefined && this.#admission.reserve >= max) {
      throw new InvalidOptionError('admission.reserve', `must be below the pool's max (${max}); got ${this.#admission.reserve}`)
    }
    // Validated here so that a bad option fails at construction, not at the first query.
    new CircuitBreaker(config.circuitBreaker)
    if (config.leakDetectionThresholdMs !== undefined) new LeakDetector(config.leakDetectionThresholdMs, this.events).stop()
    this.#warm = WarmConnections.resolve(config.warmConnections)
    this.#fleet = resolveFleetOptions(config.fleet)
    this.#retry = resolveRetryOptions(config.retry)
    if (config.sqlComment !== undefined && typeof config.sqlComment !== 'boolean') {
      throw new InvalidOptionError('sqlComment', `must be a boolean; got ${String(config.sqlComment)}`)
    }
    // The mode, and the startup parameters the pool's clients would send (a pool made later by a function is checked by its governor).
    const PoolClient = typeof pool === 'object' ? (pool.Client ?? config.controlClient) : undefined
    sessionStrategyFor(config.pooler, PoolClient && typeof pool === 'object' ? (new PoolClient({ ...pool.options }) as { connectionParameters?: object }).connectionParameters : undefined)
    this.#config = Object.freeze({ ...config })
    if (config.logger !== undefined) attachLogger(this.events, config.logger, config.logging)
    // Trace ids for log lines and comments come from @opentelemetry/api when it is installed.
    if (config.logger !== undefined || config.sqlComment) void enableOpenTelemetryTraces()
  }

  createDriver(): GovernedDriver {
    const config = this.#config
    const driver = new GovernedDriver(config, {
      policies: this.policies,
      ladder: this.#ladder,
      events: this.events,
      admission: this.#admission,
      warm: this.#warm,
      circuitBreaker: config.circuitBreaker,
      fleet: this.#fleet,
      retry: this.#retry,
      leakDetectionThresholdMs: config.leakDetectionThresholdMs,
      cursor: config.cursor,
      sqlComment: config.sqlComment,
      controlClient: config.controlClient,
      controlConnection: config.controlConnection,
      pooler: config.pooler,
    })
    this.#drivers.push(driver)
    return driver
  }

  /**
   * Counts of the pool, the dialect's wait queue, utilisation, shedding and the
   * circuit. Throws POOL_CLOSED before a Kysely instance was made with the dialect.
   *
   * @example
   * ```ts
   * const stats = dialect.poolStats()
   * if (stats.waiting > 0) console.warn('queries are queueing', stats)
   * ```
   */
  poolStats(): PoolStats {
    const driver = this.#drivers[this.#drivers.length - 1]
    if (!driver) throw new GovernorError('POOL_CLOSED', 'no driver yet: poolStats() is available once a Kysely instance uses the dialect')
    return driver.poolStats()
  }

  createQueryCompiler(): QueryCompiler {
    return new PostgresQueryCompiler()
  }

  createAdapter(): DialectAdapter {
    return new PostgresAdapter()
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- Kysely's Dialect interface declares Kysely<any>
  createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    return new PostgresIntrospector(db)
  }
}

