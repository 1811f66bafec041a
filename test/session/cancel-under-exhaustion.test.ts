import { createServer, type AddressInfo } from 'node:net'
import { Kysely, sql } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GovernedPostgresDialect, QueryCanceledError, withQueryContext, type CancelEvent } from '../../src/index.js'
import { activeWithTag, rejectionOf, waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()
const LIMIT = 3

// The shared test server cannot be driven to max_connections without starving
// the other files, so a role with CONNECTION LIMIT stands in for it: every
// further login of that role fails with 53300, exactly as at max_connections.
beforeAll(async () => {
  await database.admin(`drop role if exists limited_app`).catch(() => {})
  await database.admin(`create role limited_app login password 'limited' connection limit ${LIMIT}`)
  await database.admin(`grant create, usage on schema public to limited_app`)
})
afterAll(async () => {
  await database.admin(`reassign owned by limited_app to current_user`).catch(() => {})
  await database.admin(`drop owned by limited_app`).catch(() => {})
})

function limitedUrl(): string {
  const url = new URL(database.url)
  url.username = 'limited_app'
  url.password = 'limited'
  return url.toString()
}

async function exhaustAndAbort(eager: boolean): Promise<CancelEvent[]> {
  const pool = new pg.Pool({ connectionString: limitedUrl(), max: LIMIT, application_name: `exhausted_${eager}` })
  const dialect = new GovernedPostgresDialect({ pool, controlConnection: { eager } })
  const db = new Kysely<any>({ dialect })
  const cancels: CancelEvent[] = []
  dialect.events.on('cancel', (event) => cancels.push(event))
  try {
    if (eager) await sql`select 1`.execute(db) // the control connection opens with the first query
    const tag = `exhausted_query_${eager}`
    const controller = new AbortController()
    const running = Array.from({ length: LIMIT }, () =>
      withQueryContext({ signal: controller.signal }, () => sql`select pg_sleep(30) as ${sql.raw(tag)}`.execute(db)),
    )
    const pids = await waitFor('every connection of the role to be busy', async () => {
      const found = await activeWithTag(database, tag)
      return found.length === LIMIT && found
    })
    // The role is at its limit: a new login is refused.
    const probe = new pg.Client({ connectionString: limitedUrl() })
    const refused = await rejectionOf(probe.connect())
    expect(refused.code).toBe('53300')
    controller.abort(new Error('caller gave up'))
    for (const pending of running) expect(await rejectionOf(pending)).toBeInstanceOf(QueryCanceledError)
    await waitFor('every backend to stop', async () => (await activeWithTag(database, tag)).length === 0, 3_000)
    await waitFor('every cancel to settle', async () => cancels.length === LIMIT)
    expect(pids).toHaveLength(LIMIT)
    await waitFor('the pool to return to rest', async () => dialect.poolStats().permits === 0)
    const { rows } = await sql<{ one: number }>`select 1 as one`.execute(db)
    expect(rows).toEqual([{ one: 1 }])
    return cancels
  } finally {
    await db.destroy()
  }
}

describe('cancel under exhaustion: pool full and the server refusing logins', () => {
  it('falls back to the protocol CancelRequest when the control connection cannot be opened', async () => {
    const cancels = await exhaustAndAbort(false)
    for (const event of cancels) {
      expect(event.outcome?.method).toBe('protocol')
      expect(event.outcome?.confirmed).toBe(false)
      expect(event.outcome?.fallbackReason).toMatch(/too many connections|control connection/)
      // The statement ended with the cancel, so the unconfirmed cancel was consumed: the connection is kept.
      expect(event.destroyed).toBe(false)
    }
  })

  it('uses the control connection it opened before the exhaustion', async () => {
    // LIMIT pool connections + the eager control connection would exceed the role's limit,
    // so this pool is one smaller and the control connection takes the last slot.
    const cancels = await exhaustWithEagerControl()
    for (const event of cancels) expect(event.outcome).toMatchObject({ method: 'backend', confirmed: true })
  })
})

async function exhaustWithEagerControl(): Promise<CancelEvent[]> {
  const pool = new pg.Pool({ connectionString: limitedUrl(), max: LIMIT - 1, application_name: 'exhausted_eager' })
  const dialect = new GovernedPostgresDialect({ pool })
  const db = new Kysely<any>({ dialect })
  const cancels: CancelEvent[] = []
  dialect.events.on('cancel', (event) => cancels.push(event))
  try {
    await sql`select 1`.execute(db)
    await waitFor('the control connection to open', async () => {
      const rows = await database.admin(`select 1 from pg_stat_activity where usename = 'limited_app' and application_name = 'exhausted_eager (pg-governor control)'`)
      return rows.length === 1
    })
    const tag = 'exhausted_eager_query'
    const controller = new AbortController()
    const running = Array.from({ length: LIMIT - 1 }, () =>
      withQueryContext({ signal: controller.signal }, () => sql`select pg_sleep(30) as ${sql.raw(tag)}`.execute(db)),
    )
    await waitFor('the pool to be busy', async () => (await activeWithTag(database, tag)).length === LIMIT - 1)
    const probe = new pg.Client({ connectionString: limitedUrl() })
    expect((await rejectionOf(probe.connect())).code).toBe('53300')
    controller.abort()
    for (const pending of running) expect(await rejectionOf(pending)).toBeInstanceOf(QueryCanceledError)
    await waitFor('every backend to stop', async () => (await activeWithTag(database, tag)).length === 0, 3_000)
    await waitFor('every cancel to settle', async () => cancels.length === LIMIT - 1)
    return cancels
  } finally {
    await db.destroy()
  }
}

describe('the control connection', () => {
  it('logs in with the role given in controlConnection.config even when the pool uses a connection string', async () => {
    const pool = new pg.Pool({ connectionString: database.url, max: 1, application_name: 'control_role' })
    const dialect = new GovernedPostgresDialect({ pool, controlConnection: { config: { user: 'limited_app', password: 'limited' } } })
    const db = new Kysely<any>({ dialect })
    try {
      await sql`select 1`.execute(db)
      const rows = await waitFor('the control connection', async () => {
        const found = await database.admin<{ usename: string }>(`select usename from pg_stat_activity where application_name = 'control_role (pg-governor control)' and usename is not null`)
        return found.length > 0 && found
      })
      expect(rows).toEqual([{ usename: 'limited_app' }])
    } finally {
      await db.destroy()
    }
  })
})

describe('a control connection that never answers', () => {
  it('falls back to the protocol cancel within controlConnection.timeoutMs', async () => {
    // A listener that accepts and then says nothing: a blackholed server.
    const silent = createServer(() => {})
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    const { port } = silent.address() as AddressInfo
    const pool = new pg.Pool({ connectionString: database.url, max: 1 })
    const dialect = new GovernedPostgresDialect({ pool, controlConnection: { config: { host: '127.0.0.1', port }, eager: false, timeoutMs: 200 } })
    const db = new Kysely<any>({ dialect })
    const cancels: CancelEvent[] = []
    dialect.events.on('cancel', (event) => cancels.push(event))
    try {
      const controller = new AbortController()
      const pending = withQueryContext({ signal: controller.signal }, () => sql`select pg_sleep(30) as blackholed_control`.execute(db))
      await waitFor('the query to run', async () => (await activeWithTag(database, 'blackholed_control')).length === 1)
      controller.abort()
      expect(await rejectionOf(pending)).toBeInstanceOf(QueryCanceledError)
      await waitFor('the backend to stop', async () => (await activeWithTag(database, 'blackholed_control')).length === 0, 3_000)
      await waitFor('the cancel to settle', async () => cancels.length === 1)
      expect(cancels[0]?.outcome).toMatchObject({ method: 'protocol', confirmed: false })
      expect(cancels[0]?.outcome?.fallbackReason).toMatch(/no answer within 200 ms/)
      // A control query given up on unanswered may still be delivered (behind a partition, after the
      // heal): the session is destroyed rather than reused, even though the statement ended (issue 12).
      expect(cancels[0]?.destroyed).toBe(true)
    } finally {
      await db.destroy()
      silent.close()
    }
  })
})
