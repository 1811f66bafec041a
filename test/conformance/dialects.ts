/**
 * The two dialects the conformance suite runs every case against, and the
 * helpers the cases share. Each dialect gets a pg.Pool of its own from the
 * file's test database, so a case proves what the dialect does, not what the
 * other one did.
 */
import { Kysely, PostgresDialect, type Dialect, type PostgresCursorConstructor } from 'kysely'
import type pg from 'pg'
import Cursor from 'pg-cursor'
import { expect } from 'vitest'
import { GovernedPostgresDialect } from '../../src/index.js'
import type { TestDatabase } from '../support/test-database.js'

export type DialectName = 'PostgresDialect' | 'GovernedPostgresDialect'

export interface DialectConfig {
  /** A pool, or (as both dialects accept) a function that makes one at the first query. */
  readonly pool: pg.Pool | (() => Promise<pg.Pool>)
  readonly cursor?: PostgresCursorConstructor
  readonly onCreateConnection?: PostgresDialectHooks['onCreateConnection']
  readonly onReserveConnection?: PostgresDialectHooks['onReserveConnection']
}

type PostgresDialectHooks = NonNullable<ConstructorParameters<typeof PostgresDialect>[0]>

export type DialectFactory = (config: DialectConfig) => Dialect

/** Kysely's own dialect first: it is the reference the governed one must match. */
export const DIALECTS: ReadonlyArray<readonly [DialectName, DialectFactory]> = [
  ['PostgresDialect', (config) => new PostgresDialect(config)],
  ['GovernedPostgresDialect', (config) => new GovernedPostgresDialect(config)],
]

/** `pg-cursor`, typed as both dialects take it. */
export const PgCursor: PostgresCursorConstructor = Cursor

/** Pool options for the suite: idle clients are never reaped, so counts stay meaningful. */
export const POOL_OPTIONS: pg.PoolConfig = { max: 4, idleTimeoutMillis: 0 }

/** A pool's clients as its dialect sees them. */
export interface PoolCounts {
  readonly total: number
  /** Clients no query holds: idle in pg-pool, or kept warm by the governed dialect. */
  readonly idle: number
  readonly waiting: number
}

export interface Harness<DB> {
  readonly pool: pg.Pool
  readonly db: Kysely<DB>
  /**
   * The pool's counts through the dialect: pg-pool's own for PostgresDialect;
   * `poolStats()` for the governed dialect, which keeps released connections
   * warm for a while (checked out as far as pg-pool knows, idle in fact).
   */
  counts(): PoolCounts
}

/** A Kysely instance on the given dialect with a pool of its own. */
export function createHarness<DB>(
  database: TestDatabase,
  makeDialect: DialectFactory,
  options: { pool?: pg.PoolConfig; cursor?: PostgresCursorConstructor | null; hooks?: Partial<DialectConfig> } = {},
): Harness<DB> {
  const pool = database.pool({ ...POOL_OPTIONS, ...options.pool })
  const cursor = options.cursor === null ? undefined : (options.cursor ?? PgCursor)
  const dialect = makeDialect({ ...options.hooks, pool, ...(cursor ? { cursor } : {}) })
  const db = new Kysely<DB>({ dialect })
  return { pool, db, counts: () => poolCounts(dialect, pool) }
}

/** See {@link Harness.counts}. */
export function poolCounts(dialect: Dialect, pool: pg.Pool): PoolCounts {
  if (!(dialect instanceof GovernedPostgresDialect)) return { total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }
  const stats = dialect.poolStats()
  return { total: stats.total, idle: stats.idle, waiting: stats.waiting + stats.pgPoolWaiting }
}

/** Lets release callbacks that Kysely does not await run (a few turns of the event loop). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve))
}

/** Every client the pool made is idle (in pg-pool or kept warm) and nobody waits for one. */
export async function expectPoolIdle(harness: Pick<Harness<unknown>, 'counts'>): Promise<void> {
  await settle()
  const counts = harness.counts()
  expect(counts).toEqual({ total: counts.total, idle: counts.total, waiting: 0 })
}

/** The rejection of `promise`, or a failed expectation when it resolves. */
export async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise
  } catch (error) {
    return error
  }
  expect.fail('expected the promise to reject, it resolved')
}

/** The fields of a pg error that callers act on, for exact comparisons. */
export function pgErrorShape(error: unknown): Record<string, unknown> {
  const e = error as pg.DatabaseError
  return {
    name: e.name,
    message: e.message,
    code: e.code,
    severity: e.severity,
    detail: e.detail,
    hint: e.hint,
    position: e.position,
    schema: e.schema,
    table: e.table,
    column: e.column,
    dataType: e.dataType,
    constraint: e.constraint,
  }
}

/**
 * Observations recorded by the per-dialect cases, compared across dialects by
 * a final parity test in the same file.
 */
export class ParityLog {
  readonly #byDialect = new Map<DialectName, Map<string, unknown>>()

  record(dialect: DialectName, key: string, value: unknown): void {
    let entries = this.#byDialect.get(dialect)
    if (!entries) {
      entries = new Map()
      this.#byDialect.set(dialect, entries)
    }
    entries.set(key, value)
  }

  /** Observations of one dialect as a plain object (keys sorted). */
  of(dialect: DialectName): Record<string, unknown> {
    const entries = this.#byDialect.get(dialect) ?? new Map<string, unknown>()
    return Object.fromEntries([...entries.entries()].sort(([a], [b]) => a.localeCompare(b)))
  }

  /** Both dialects recorded the same keys with equal values. */
  expectParity(): void {
    const reference = this.of('PostgresDialect')
    const governed = this.of('GovernedPostgresDialect')
    expect(Object.keys(reference).length).toBeGreaterThan(0)
    expect(Object.keys(governed)).toEqual(Object.keys(reference))
    expect(governed).toEqual(reference)
  }
}
