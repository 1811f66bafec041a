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
import type { PolicyRegistry } from '../context/policy-registry.js'
import { GovernorError } from '../errors/governor-error.js'
import { InvalidOptionError } from '../errors/invalid-option-error.js'
import { resolveGovernorParts } from '../governor/governor-options.js'
import type { GovernorParts } from '../governor/governor-parts.js'
import type { PoolStats } from '../governor/pool-stats.js'
import type { GovernorEvents } from '../telemetry/governor-events.js'
import { GovernedDriver } from './governed-driver.js'
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
  readonly #parts: GovernorParts
  readonly #drivers: GovernedDriver[] = []
  /** Policies by domain; change them at runtime with `set` and `delete`. */
  readonly policies: PolicyRegistry
  /** Typed listeners for queries, cancels and statement_timeout changes. */
  readonly events: GovernorEvents

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
    // A pool made later by a function is checked by its governor.
    this.#parts = resolveGovernorParts(config, typeof pool === 'object' ? pool : undefined)
    this.policies = this.#parts.policies
    this.events = this.#parts.events
    this.#config = Object.freeze({ ...config })
  }

  createDriver(): GovernedDriver {
    const driver = new GovernedDriver(this.#config, this.#parts)
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

