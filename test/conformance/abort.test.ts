/**
 * Conformance of GovernedPostgresDialect with Kysely's PostgresDialect:
 * Kysely's own `execute({ signal, inflightQueryAbortStrategy })`.
 */
import { sql, type InflightQueryAbortStrategy } from 'kysely'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { useTestDatabase } from '../support/test-database.js'
import { createHarness, DIALECTS, expectPoolIdle, ParityLog, rejectionOf, type Harness } from './dialects.js'

const database = useTestDatabase()
const parity = new ParityLog()

describe.each(DIALECTS)('%s', (dialect, makeDialect) => {
  const applicationName = `conformance-abort-${dialect}`
  let h: Harness<any>

  beforeAll(() => {
    h = createHarness<any>(database, makeDialect, { pool: { max: 2, application_name: applicationName } })
    if (dialect === 'PostgresDialect') {
      // After 'kill session' the dead client's 'error' (while still checked out)
      // or pg-pool's 'error' (once it is back) is an uncaught exception with
      // Kysely's dialect unless the user listens, as node-postgres advises.
      // GovernedPostgresDialect listens itself (DESIGN invariant 6), so it runs
      // without this workaround.
      h.pool.on('error', () => {})
      h.pool.on('connect', (client) => client.on('error', () => {}))
    }
  })

  afterAll(async () => {
    await h.db.destroy()
  })

  async function sleepers(): Promise<{ pid: number; state: string }[]> {
    return database.admin<{ pid: number; state: string }>(
      `select pid, state from pg_stat_activity where application_name = $1 and query like 'select pg_sleep(%' and state = 'active'`,
      [applicationName],
    )
  }

  async function pidsOfPool(): Promise<number[]> {
    const rows = await database.admin<{ pid: number }>(`select pid from pg_stat_activity where application_name = $1 order by pid`, [applicationName])
    return rows.map((row) => row.pid)
  }

  it('an already-aborted signal rejects with its reason and takes no connection', async () => {
    const before = h.pool.totalCount
    const reason = new Error('aborted before start')
    const controller = new AbortController()
    controller.abort(reason)
    const error = await rejectionOf(sql`select 1`.execute(h.db, { signal: controller.signal }))
    expect(error).toBe(reason)
    expect(h.pool.totalCount).toBe(before)
    await expectPoolIdle(h)
  })

  it.each<InflightQueryAbortStrategy>(['cancel query', 'kill session'])("'%s' rejects with the reason and stops the backend", async (strategy) => {
    const reason = new Error(`stop (${strategy})`)
    const controller = new AbortController()
    const started = performance.now()
    const pending = rejectionOf(sql`select pg_sleep(5)`.execute(h.db, { signal: controller.signal, inflightQueryAbortStrategy: strategy }))
    await vi.waitFor(async () => expect(await sleepers()).toHaveLength(1), { timeout: 3_000, interval: 10 })
    const [victim] = await sleepers()
    const clientsBefore = h.pool.totalCount
    controller.abort(reason)
    const error = await pending
    expect(error).toBe(reason)
    expect(performance.now() - started).toBeLessThan(2_000)
    // The backend stops: cancelled (idle again) or, for 'kill session', gone.
    await vi.waitFor(async () => expect(await sleepers()).toEqual([]), { timeout: 2_000, interval: 20 })
    await vi.waitFor(() => expectPoolIdle(h), { timeout: 2_000, interval: 20 })
    // A killed session's client must leave the pool before the next query can be served by it. Our dialect
    // destroys it on release; Kysely's releases it and pg-pool drops it only once pg has read the closed
    // socket, which can come after the pool is idle again (the next query then fails).
    if (strategy === 'kill session') await vi.waitFor(() => expect(h.pool.totalCount).toBe(clientsBefore - 1), { timeout: 2_000, interval: 10 })
    const alive = await pidsOfPool()
    if (strategy === 'kill session') expect(alive).not.toContain(victim!.pid)
    else expect(alive).toContain(victim!.pid)
    const { rows } = await sql<{ ok: number }>`select 1 as ok`.execute(h.db)
    expect(rows).toEqual([{ ok: 1 }])
    parity.record(dialect, `abort.${strategy}`, { sameReason: error === reason, backendKept: alive.includes(victim!.pid) })
  })

  it("'ignore query' rejects at once and the connection comes back once the query ends", async () => {
    const reason = new Error('stop (ignore query)')
    const controller = new AbortController()
    const pending = rejectionOf(sql`select pg_sleep(0.5)`.execute(h.db, { signal: controller.signal }))
    await vi.waitFor(async () => expect(await sleepers()).toHaveLength(1), { timeout: 3_000, interval: 10 })
    const abortedAt = performance.now()
    controller.abort(reason)
    expect(await pending).toBe(reason)
    expect(performance.now() - abortedAt).toBeLessThan(200)
    await vi.waitFor(() => expectPoolIdle(h), { timeout: 3_000, interval: 20 })
    const { rows } = await sql<{ ok: number }>`select 1 as ok`.execute(h.db)
    expect(rows).toEqual([{ ok: 1 }])
  })

  it('an abort while consuming a stream rejects with the reason and returns the connection', async () => {
    const reason = new Error('stop streaming')
    const controller = new AbortController()
    const rows: number[] = []
    const error = await rejectionOf(
      (async () => {
        const query = h.db.selectFrom(sql<{ n: number }>`(select generate_series(1, 100) as n)`.as('t')).select('n')
        for await (const row of query.stream({ chunkSize: 10, signal: controller.signal })) {
          rows.push(row.n)
          if (row.n === 3) controller.abort(reason)
        }
      })(),
    )
    expect(error).toBe(reason)
    // Kysely checks the signal between chunks: the rest of the first chunk is still yielded.
    expect(rows).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    await vi.waitFor(() => expectPoolIdle(h), { timeout: 2_000, interval: 20 })
    const { rows: after } = await sql<{ ok: number }>`select 1 as ok`.execute(h.db)
    expect(after).toEqual([{ ok: 1 }])
    parity.record(dialect, 'abort.stream', { sameReason: error === reason, rows })
  })

  it('leaves its pool idle after every case', async () => {
    await expectPoolIdle(h)
  })
})

describe('parity', () => {
  it('both dialects recorded the same observations', () => {
    parity.expectParity()
  })
})
