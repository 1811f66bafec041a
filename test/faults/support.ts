import { Kysely } from 'kysely'
import pg from 'pg'
import { GovernedPostgresDialect, type GovernedPostgresDialectConfig } from '../../src/index.js'
import type { TestDatabase } from '../support/test-database.js'

/** A governed Kysely whose pool (and control connection, unless `config` says otherwise) goes through `url` (a fault proxy). */
export function governedThrough(
  url: string,
  poolOptions: pg.PoolConfig,
  config: Omit<GovernedPostgresDialectConfig, 'pool'> = {},
): { readonly db: Kysely<any>; readonly dialect: GovernedPostgresDialect; readonly pool: pg.Pool } {
  const pool = new pg.Pool({ connectionString: url, ...poolOptions })
  const dialect = new GovernedPostgresDialect({ pool, ...config })
  return { db: new Kysely<any>({ dialect }), dialect, pool }
}

/** Server connections (backends) whose application_name starts with `prefix`, seen from outside the proxy. */
export async function serverConnections(database: TestDatabase, prefix: string): Promise<number> {
  const rows = await database.admin<{ n: number }>(`select count(*)::int as n from pg_stat_activity where application_name like $1`, [`${prefix}%`])
  return rows[0]?.n ?? 0
}

/** When `promise` settled (performance.now()) and how. */
export async function settledAt(promise: Promise<unknown>): Promise<{ readonly at: number; readonly error: any; readonly value: unknown }> {
  try {
    const value = await promise
    return { at: performance.now(), error: undefined, value }
  } catch (error) {
    return { at: performance.now(), error, value: undefined }
  }
}

/** Margin for "at its deadline" on a shared 2-core machine; figures are printed. */
export const LATE_MARGIN_MS = 150
