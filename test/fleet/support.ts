import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll } from 'vitest'
import type { TestDatabase } from '../support/test-database.js'

/** A login role with a CONNECTION LIMIT on the file's database, standing in for a full server. */
export interface LimitedRole {
  readonly name: string
  /** The file's database URL, logged in as the role. */
  readonly url: () => string
}

/**
 * The shared test server cannot be driven to max_connections without
 * starving the other files, so a role with CONNECTION LIMIT stands in for it:
 * every further login of that role fails with 53300, exactly as at
 * max_connections (test/session/cancel-under-exhaustion.test.ts does the same).
 */
export function useLimitedRole(database: TestDatabase, limit: number): LimitedRole {
  const name = `fleet_${randomBytes(4).toString('hex')}`
  beforeAll(async () => {
    await database.admin(`create role ${name} login password 'fleet' connection limit ${limit}`)
    await database.admin(`grant create, usage on schema public to ${name}`)
  })
  afterAll(async () => {
    await database.admin(`select pg_terminate_backend(pid) from pg_stat_activity where usename = '${name}'`).catch(() => {})
    await database.admin(`drop owned by ${name}`).catch(() => {})
  })
  return {
    name,
    url() {
      const url = new URL(database.url)
      url.username = name
      url.password = 'fleet'
      return url.toString()
    },
  }
}

/** Sessions of `role` open on the server now, control connections included. */
export async function sessionsOf(database: TestDatabase, role: string): Promise<number> {
  const rows = await database.admin<{ n: number }>(`select count(*)::int as n from pg_stat_activity where usename = $1`, [role])
  return rows[0]?.n ?? 0
}
