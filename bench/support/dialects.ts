import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import type { GovernedPostgresDialectConfig } from '../../src/index.js'
import type { Governor } from './lib.js'

/** The pool settings every setup shares, so that only the dialect differs. */
export function benchPool(url: string, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max, application_name: 'pg-governor bench' })
  // Kysely's PostgresDialect adds no 'error' listener: an idle client dropped when the
  // server stops at the end of a run would otherwise crash the process.
  pool.on('error', () => {})
  return pool
}

export interface PlainDb {
  readonly db: Kysely<any>
  readonly pool: pg.Pool
}

export interface GovernedDb extends PlainDb {
  readonly dialect: InstanceType<Governor['GovernedPostgresDialect']>
}

export function plainDb(url: string, max: number): PlainDb {
  const pool = benchPool(url, max)
  return { db: new Kysely<any>({ dialect: new PostgresDialect({ pool }) }), pool }
}

export function governedDb(governor: Governor, url: string, max: number, config: Omit<GovernedPostgresDialectConfig, 'pool'> = {}): GovernedDb {
  const pool = benchPool(url, max)
  const dialect = new governor.GovernedPostgresDialect({ ...config, pool })
  return { db: new Kysely<any>({ dialect }), pool, dialect }
}

const SELECT_1 = sql<{ one: number }>`select 1 as one`

/** `select 1`, nothing else. */
export function select1(db: Kysely<any>): () => Promise<unknown> {
  return () => SELECT_1.execute(db)
}

/** `select 1` inside a per-request `withQueryContext({ timeoutMs })`: the deadline path. */
export function select1WithDeadline(governor: Governor, db: Kysely<any>, timeoutMs: number): () => Promise<unknown> {
  const { withQueryContext } = governor
  return () => withQueryContext({ timeoutMs }, () => SELECT_1.execute(db))
}
