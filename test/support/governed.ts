import { Kysely } from 'kysely'
import type pg from 'pg'
import { GovernedPostgresDialect, type GovernedPostgresDialectConfig } from '../../src/index.js'
import { expect } from 'vitest'
import type { TestDatabase } from './test-database.js'

/** A Kysely instance on a governed dialect with a pool of its own. */
export interface GovernedSetup {
  readonly db: Kysely<any>
  readonly dialect: GovernedPostgresDialect
  readonly pool: pg.Pool
}

export function governed(
  database: TestDatabase,
  poolOptions: pg.PoolConfig = {},
  config: Omit<GovernedPostgresDialectConfig, 'pool'> = {},
): GovernedSetup {
  const pool = database.pool({ max: 4, ...poolOptions })
  const dialect = new GovernedPostgresDialect({ pool, ...config })
  return { db: new Kysely<any>({ dialect }), dialect, pool }
}

/** Polls until `check` returns a truthy value, or fails after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false>, timeoutMs = 5_000): Promise<T> {
  const until = performance.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value) return value
    if (performance.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(5)
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Settles a promise into its error, failing the test if it resolved. */
export async function rejectionOf(promise: Promise<unknown>): Promise<any> {
  try {
    await promise
  } catch (error) {
    return error
  }
  throw new Error('expected the promise to reject, but it resolved')
}

/** The pg_stat_activity row of a backend, or undefined once it is gone. */
export async function backend(database: TestDatabase, pid: number): Promise<{ state: string; query: string } | undefined> {
  const rows = await database.admin<{ state: string; query: string }>('select state, query from pg_stat_activity where pid = $1', [pid])
  return rows[0]
}

/** Pids of backends currently running a statement whose text contains `tag`. */
export async function activeWithTag(database: TestDatabase, tag: string): Promise<number[]> {
  const rows = await database.admin<{ pid: number }>(
    `select pid from pg_stat_activity where state = 'active' and pid <> pg_backend_pid() and position($1 in query) > 0`,
    [tag],
  )
  return rows.map((row) => row.pid)
}

/** The pid of the one backend running a statement tagged `tag`, once it runs. */
export async function pidOfRunning(database: TestDatabase, tag: string): Promise<number> {
  const pids = await waitFor(`a backend running ${tag}`, async () => {
    const found = await activeWithTag(database, tag)
    return found.length > 0 && found
  })
  expect(pids).toHaveLength(1)
  return pids[0] as number
}

/** Waits until backend `pid` is no longer running a statement (or is gone). */
export async function expectBackendIdle(database: TestDatabase, pid: number, timeoutMs = 2_000): Promise<void> {
  await waitFor(
    `backend ${pid} to stop`,
    async () => {
      const row = await backend(database, pid)
      return !row || row.state !== 'active'
    },
    timeoutMs,
  )
}
