import { Kysely } from 'kysely'
import pg from 'pg'
import { GovernedPostgresDialect, type GovernedPostgresDialectConfig } from '../../src/index.js'
import { afterEach } from 'vitest'
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js'
import { sleep } from '../support/governed.js'
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

/** A fault proxy in front of `database`, started by `start()` and closed after each test. */
export function useFaultProxy(database: TestDatabase): { start(): Promise<FaultProxy> } {
  let proxy: FaultProxy | undefined
  afterEach(async () => {
    await proxy?.close()
    proxy = undefined
  })
  return {
    async start() {
      proxy = await startFaultProxy(database.url)
      return proxy
    },
  }
}

/** A backend of ours as pg_stat_activity shows it. */
export interface ServerBackend {
  readonly pid: number
  readonly app: string
  readonly state: string | null
  readonly query: string
}

/**
 * Samples, every 2 ms from an admin connection that bypasses the proxy, the
 * backends whose application_name starts with `prefix`; keeps the largest
 * sample (`most`), and calls `onSample` after each one.
 */
export function sampleBackends(database: TestDatabase, prefix: string, onSample: () => void = () => {}): { readonly most: () => readonly ServerBackend[]; stop(): Promise<void> } {
  let sampling = true
  let most: ServerBackend[] = []
  const sampler = (async () => {
    while (sampling) {
      const rows = await database.admin<ServerBackend>(`select pid, application_name as app, state, left(query, 40) as query from pg_stat_activity where application_name like $1`, [`${prefix}%`])
      if (rows.length > most.length) most = rows
      onSample()
      await sleep(2)
    }
  })()
  return {
    most: () => most,
    async stop() {
      sampling = false
      await sampler
    },
  }
}
