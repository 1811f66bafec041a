import {
  AbortedTransactionError,
  createQueryId,
  IdentifierNode,
  RawNode,
  type AbortableOperationOptions,
  type DatabaseConnection,
  type Driver,
  type QueryCompiler,
  type TransactionSettings,
} from 'kysely'
import { GovernorError } from '../errors/governor-error.js'
import { Governor } from '../governor/governor.js'
import type { GovernorParts } from '../governor/governor-parts.js'
import { IDLE_POOL_STATS, type PoolStats } from '../governor/pool-stats.js'
import { GovernedConnection, leaseOfConnection } from './governed-connection.js'
import type { GovernedPostgresDialectConfig } from './governed-postgres-dialect-config.js'

type SavepointCommand = 'savepoint' | 'rollback to' | 'release'

/**
 * The Kysely driver behind {@link GovernedPostgresDialect}: translates
 * Kysely's calls into leases and statements of a {@link Governor}, and
 * decides nothing itself.
 *
 * @example
 * ```ts
 * const driver = new GovernedPostgresDialect({ pool }).createDriver() // Kysely does this for you
 * ```
 */
export class GovernedDriver implements Driver {
  readonly #config: GovernedPostgresDialectConfig
  readonly #parts: GovernorParts
  #governor: Governor | undefined

  constructor(config: GovernedPostgresDialectConfig, parts: GovernorParts) {
    this.#config = config
    this.#parts = parts
  }

  /** The governor, once the driver is initialised. */
  get governor(): Governor | undefined {
    return this.#governor
  }

  /** Counts of the pool and of the wait queue, at this instant; all zero before Kysely has initialised the driver. */
  poolStats(): PoolStats {
    return this.#governor?.stats() ?? IDLE_POOL_STATS
  }

  async init(options?: AbortableOperationOptions): Promise<void> {
    const { pool } = this.#config
    this.#governor = new Governor(typeof pool === 'function' ? await pool(options) : pool, this.#parts)
  }

  async acquireConnection(options?: AbortableOperationOptions): Promise<DatabaseConnection> {
    const governor = this.#governor
    if (!governor) throw new GovernorError('POOL_CLOSED', 'driver has already been destroyed')
    const signal = options?.signal
    const lease = (signal ? undefined : governor.tryAcquire()) ?? (await governor.acquire(signal))
    const connection = new GovernedConnection(lease, governor)
    const { onCreateConnection, onReserveConnection } = this.#config
    try {
      if (lease.fresh && onCreateConnection) await onCreateConnection(connection, options)
      if (onReserveConnection) await onReserveConnection(connection, options)
    } catch (error) {
      lease.release()
      throw error
    }
    return connection
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    let sql = 'begin'
    if (settings.isolationLevel || settings.accessMode) {
      sql = 'start transaction'
      if (settings.isolationLevel) sql += ` isolation level ${settings.isolationLevel}`
      if (settings.accessMode) sql += ` ${settings.accessMode}`
    }
    await leaseOfConnection(connection).session.control(sql)
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    const result = await leaseOfConnection(connection).session.control('commit')
    // PostgreSQL completes COMMIT with a ROLLBACK tag when an earlier error aborted the transaction.
    if (result.command === 'ROLLBACK') throw new AbortedTransactionError()
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    const { session } = leaseOfConnection(connection)
    try {
      await session.control('rollback')
    } catch (error) {
      session.discard(`rollback failed: ${String(error)}`)
      throw error
    }
  }

  async savepoint(connection: DatabaseConnection, name: string, compileQuery: QueryCompiler['compileQuery']): Promise<void> {
    await this.#savepointCommand(connection, 'savepoint', name, compileQuery)
  }

  async rollbackToSavepoint(connection: DatabaseConnection, name: string, compileQuery: QueryCompiler['compileQuery']): Promise<void> {
    await this.#savepointCommand(connection, 'rollback to', name, compileQuery)
    leaseOfConnection(connection).session.savepointRolledBack()
  }

  async releaseSavepoint(connection: DatabaseConnection, name: string, compileQuery: QueryCompiler['compileQuery']): Promise<void> {
    await this.#savepointCommand(connection, 'release', name, compileQuery)
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    leaseOfConnection(connection).release()
  }

  async destroy(): Promise<void> {
    const governor = this.#governor
    this.#governor = undefined
    await governor?.end()
  }

  async #savepointCommand(connection: DatabaseConnection, command: SavepointCommand, name: string, compileQuery: QueryCompiler['compileQuery']): Promise<void> {
    // The same node Kysely's own (unexported) savepoint parser builds: the name is sanitised as an identifier.
    const node = RawNode.createWithChildren([RawNode.createWithSql(`${command} `), IdentifierNode.create(name)])
    await leaseOfConnection(connection).session.control(compileQuery(node, createQueryId()).sql)
  }
}
