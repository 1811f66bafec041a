import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { afterAll, beforeAll, inject } from 'vitest'

/** A database of its own for one test file, on the run's shared server. */
export interface TestDatabase {
  /** Connection string of the file's database. */
  readonly url: string
  /** A new pg Pool on the file's database; ended after the file. */
  pool(options?: pg.PoolConfig): pg.Pool
  /** Runs SQL as superuser on the file's database (outside any pool under test). */
  admin<R extends pg.QueryResultRow = Record<string, unknown>>(sql: string, parameters?: unknown[]): Promise<R[]>
}

/**
 * Creates a fresh database before the file's tests and drops it after, so
 * files can run in parallel on one server.
 */
export function useTestDatabase(): TestDatabase {
  const name = `t_${randomBytes(6).toString('hex')}`
  const serverUrl = inject('pgUrl')
  const url = withDatabase(serverUrl, name)
  const pools: pg.Pool[] = []
  let adminClient: pg.Client | undefined

  beforeAll(async () => {
    await withClient(serverUrl, (client) => client.query(`create database ${name}`))
    adminClient = new pg.Client({ connectionString: url, application_name: 'pg-governor test admin' })
    await adminClient.connect()
  })

  afterAll(async () => {
    await Promise.allSettled(pools.map((pool) => pool.end()))
    await adminClient?.end()
    await withClient(serverUrl, (client) => client.query(`drop database if exists ${name} with (force)`))
  })

  return {
    url,
    pool(options = {}) {
      const pool = new pg.Pool({ connectionString: url, ...options })
      pools.push(pool)
      return pool
    },
    async admin(sql, parameters) {
      if (!adminClient) throw new Error('admin() is only available inside tests and hooks')
      const result = await adminClient.query(sql, parameters)
      return result.rows
    },
  }
}

function withDatabase(url: string, database: string): string {
  const parsed = new URL(url)
  parsed.pathname = `/${database}`
  return parsed.toString()
}

async function withClient<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}
