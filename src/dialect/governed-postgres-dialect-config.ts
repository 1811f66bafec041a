import type { AbortableOperationOptions, DatabaseConnection } from 'kysely'
import type { GovernorOptions } from '../governor/governor-options.js'
import type { PgPool } from '../session/pg-types.js'

/**
 * Options of {@link GovernedPostgresDialect}: Kysely's `PostgresDialectConfig`
 * (`pool`, `cursor`, `controlClient`, `onCreateConnection`,
 * `onReserveConnection`) plus the governance of {@link GovernorOptions}.
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
export interface GovernedPostgresDialectConfig extends GovernorOptions {
  /** A pg Pool, or a function that makes one (called once, at the first query). Give the dialect a pool of its own. */
  readonly pool: PgPool | ((options?: AbortableOperationOptions) => Promise<PgPool>)
  /** Called once for each new connection, as in Kysely's PostgresDialect. */
  readonly onCreateConnection?: ((connection: DatabaseConnection, options?: AbortableOperationOptions) => Promise<void>) | undefined
  /** Called each time a connection is taken from the pool, as in Kysely's PostgresDialect. */
  readonly onReserveConnection?: ((connection: DatabaseConnection, options?: AbortableOperationOptions) => Promise<void>) | undefined
}
