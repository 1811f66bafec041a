import { Kysely, sql } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DeadlineExceededError, GovernedPostgresDialect, QueryCanceledError, withQueryContext, type CancelEvent } from '../../src/index.js'
import { expectBackendIdle, pidOfRunning, rejectionOf, waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'
import { usePgBouncer } from './fixture.js'

// PgBouncer in session pooling works as a direct connection does, except that its pids are
// not backends': cancels go as protocol CancelRequests, which it routes.
const database = useTestDatabase()
const bouncer = usePgBouncer(() => database.url, { poolMode: 'session', defaultPoolSize: 4 })

describe.skipIf(!bouncer)('behind PgBouncer in session pooling', () => {
  let db: Kysely<any>
  let dialect: GovernedPostgresDialect
  const cancels: CancelEvent[] = []

  beforeAll(() => {
    const pool = new pg.Pool({ connectionString: bouncer!.url, max: 3, application_name: 'pgbouncer-session-test' })
    dialect = new GovernedPostgresDialect({ pool, pooler: 'pgbouncer-session', admission: { feasibility: false } })
    dialect.events.on('cancel', (event) => cancels.push(event))
    db = new Kysely<any>({ dialect })
  })

  afterAll(async () => {
    await db?.destroy()
  })

  it('stops the backend on abort and at the deadline', async () => {
    const controller = new AbortController()
    // A long budget: only the cancel, not our statement_timeout, can stop it within the test's wait.
    const aborted = withQueryContext({ signal: controller.signal, timeoutMs: 60_000 }, () => sql`select pg_sleep(30) as pgbs_abort`.execute(db))
    const abortedPid = await pidOfRunning(database, 'pgbs_abort')
    controller.abort()
    expect(await rejectionOf(aborted)).toBeInstanceOf(QueryCanceledError)
    await expectBackendIdle(database, abortedPid, 1_500)

    const late = withQueryContext({ timeoutMs: 300 }, () => sql`select pg_sleep(30) as pgbs_deadline`.execute(db))
    const latePid = await pidOfRunning(database, 'pgbs_deadline')
    expect(await rejectionOf(late)).toBeInstanceOf(DeadlineExceededError)
    await expectBackendIdle(database, latePid)
    await waitFor('two cancel events', async () => cancels.length >= 2)
    expect(cancels.map((event) => [event.outcome?.method, event.destroyed])).toEqual([
      ['protocol', false],
      ['protocol', false],
    ])
    expect(await bouncer!.instance.alive()).toBe(true)
  })

  it('carries statement_timeout as a session SET, as on a direct connection, and PgBouncer resets it when our client leaves', async () => {
    const ours = await withQueryContext({ timeoutMs: 5_000 }, async () => (await sql<{ statement_timeout: string }>`show statement_timeout`.execute(db)).rows[0]?.statement_timeout)
    expect(ours).not.toBe('0')
    await db.destroy()
    // Every server connection, as the next client gets it (server_reset_query = DISCARD ALL).
    const clients = await Promise.all([0, 1, 2, 3].map(async () => {
      const client = new pg.Client({ connectionString: bouncer!.url })
      await client.connect()
      return client
    }))
    try {
      const seen = await Promise.all(clients.map(async (client) => (await client.query<{ statement_timeout: string }>('show statement_timeout')).rows[0]?.statement_timeout))
      expect(seen).toEqual(['0', '0', '0', '0'])
    } finally {
      await Promise.all(clients.map((client) => client.end()))
    }
  })
})
