import { sql } from 'kysely'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { DeadlineExceededError, withQueryContext, type CancelEvent } from '../../src/index.js'
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js'
import { activeWithTag, sleep, waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'
import { governedThrough, LATE_MARGIN_MS, serverConnections, settledAt } from './support.js'

const database = useTestDatabase()
const proxies: FaultProxy[] = []
afterEach(async () => {
  await Promise.all(proxies.splice(0).map((proxy) => proxy.close()))
})
beforeAll(async () => {
  await database.admin('create table ledger (id int primary key)')
})

async function proxy(): Promise<FaultProxy> {
  const started = await startFaultProxy(database.url)
  proxies.push(started)
  return started
}

describe('every phase ends at the deadline under network faults', () => {
  it('the SET of statement_timeout before a statement (the ~1 s lateness of the issue): latency 800 ms', async () => {
    const faults = await proxy()
    const { db } = governedThrough(faults.url, { max: 1, application_name: 'faults-set' }, { warmConnections: false })
    try {
      // The session's statement_timeout is at the 5 s step; a 300 ms budget needs a SET first.
      await withQueryContext({ timeoutMs: 4_000 }, () => sql`select 1`.execute(db))
      faults.toxics('downstream', { latencyMs: 800 })
      const startedAt = performance.now()
      const { at, error } = await settledAt(withQueryContext({ timeoutMs: 300 }, () => sql`select 1`.execute(db)))
      console.log(`SET under 800 ms latency: rejected ${(at - startedAt - 300).toFixed(1)} ms past a 300 ms deadline`)
      expect(error).toBeInstanceOf(DeadlineExceededError)
      expect(at - startedAt).toBeLessThan(300 + LATE_MARGIN_MS)
      faults.clear()
      // The stopped SET settles behind the caller; the next statement works.
      const { rows } = await withQueryContext({ timeoutMs: 5_000 }, () => sql<{ n: number }>`select 7 as n`.execute(db))
      expect(rows).toEqual([{ n: 7 }])
    } finally {
      await db.destroy()
    }
  })

  it('a commit behind a partition is rejected at the deadline, and the pool recovers after the heal', async () => {
    const faults = await proxy()
    const { db, dialect } = governedThrough(faults.url, { max: 2, application_name: 'faults-commit' }, { warmConnections: false, controlConnection: { timeoutMs: 300 } })
    try {
      const startedAt = performance.now()
      const outcome = settledAt(
        withQueryContext({ timeoutMs: 600 }, () =>
          db.transaction().execute(async (trx) => {
            await sql`insert into ledger values (1)`.execute(trx)
            faults.hold()
          }),
        ),
      )
      const { at, error } = await outcome
      console.log(`commit behind a partition: rejected ${(at - startedAt - 600).toFixed(1)} ms past a 600 ms deadline`)
      expect(error).toBeInstanceOf(DeadlineExceededError)
      expect(at - startedAt).toBeLessThan(600 + LATE_MARGIN_MS)
      await sleep(300)
      faults.heal()
      const { rows } = await withQueryContext({ timeoutMs: 5_000 }, () => sql<{ n: number }>`select 3 as n`.execute(db))
      expect(rows).toEqual([{ n: 3 }])
      await waitFor('the pool to return to rest', async () => dialect.poolStats().permits === 0 && dialect.poolStats().waiting === 0, 8_000)
      await waitFor('server connections within max + control', async () => (await serverConnections(database, 'faults-commit')) <= 3, 5_000)
    } finally {
      faults.heal()
      await db.destroy()
    }
  })

  it('the server stops the statement (statement_timeout) when the client cannot reach it', async () => {
    const faults = await proxy()
    const { db } = governedThrough(faults.url, { max: 1, application_name: 'faults-st' }, { warmConnections: false, controlConnection: { timeoutMs: 300 } })
    try {
      const pending = settledAt(withQueryContext({ timeoutMs: 400 }, () => sql`select pg_sleep(30) as unreachable_client`.execute(db)))
      await waitFor('the statement to run', async () => (await activeWithTag(database, 'unreachable_client')).length === 1)
      faults.hold()
      expect((await pending).error).toBeInstanceOf(DeadlineExceededError)
      // Neither cancel can get through; the server's own statement_timeout (the 500 ms step) ends it.
      const heldAt = performance.now()
      await waitFor('the server to stop the statement', async () => (await activeWithTag(database, 'unreachable_client')).length === 0, 3_000)
      console.log(`statement stopped by the server ${(performance.now() - heldAt).toFixed(0)} ms after the partition began`)
    } finally {
      faults.heal()
      await db.destroy()
    }
  })

  it('connections reset and refused for 1 s: every query settles by its deadline, the process survives, the pool recovers', async () => {
    const faults = await proxy()
    const { db, dialect } = governedThrough(faults.url, { max: 4, application_name: 'faults-reset' }, { warmConnections: false })
    try {
      await Promise.all(Array.from({ length: 4 }, () => sql`select pg_sleep(0.05)`.execute(db)))
      const running = Array.from({ length: 6 }, (_, i) => {
        const startedAt = performance.now()
        return settledAt(withQueryContext({ timeoutMs: 1_500 }, () => sql`select pg_sleep(0.3), ${i}::int as n`.execute(db))).then((outcome) => ({ ...outcome, startedAt }))
      })
      await sleep(50)
      faults.refuseFor(1_000)
      faults.reset()
      for (const { at, startedAt } of await Promise.all(running)) expect(at - startedAt).toBeLessThan(1_500 + LATE_MARGIN_MS)
      await sleep(1_000)
      faults.clear()
      const recovered = await waitFor(
        'a query to succeed after the heal',
        async () => (await settledAt(withQueryContext({ timeoutMs: 1_000 }, () => sql`select 1`.execute(db)))).error === undefined,
        5_000,
      )
      expect(recovered).toBe(true)
      await waitFor('the pool to return to rest', async () => dialect.poolStats().permits === 0 && dialect.poolStats().waiting === 0)
    } finally {
      await db.destroy()
    }
  })
})

describe('a cancel never hits another query under faults', () => {
  it('a pg_cancel_backend held behind a partition on the control connection, delivered after the heal, meets no statement of ours', async () => {
    // The pool heals first; the control connection (its own proxy) 500 ms later, when the
    // pg_cancel_backend it was given up on (after 300 ms) is finally delivered.
    const pooled = await proxy()
    const control = await proxy()
    const { db, dialect } = governedThrough(
      pooled.url,
      { max: 1, application_name: 'faults-late-cancel' },
      { warmConnections: false, controlConnection: { timeoutMs: 300, config: { port: control.port, host: '127.0.0.1' } } },
    )
    const cancels: CancelEvent[] = []
    dialect.events.on('cancel', (event) => cancels.push(event))
    try {
      await sql`select 1`.execute(db)
      await waitFor('the control connection', async () => (await serverConnections(database, 'faults-late-cancel')) === 2)
      const stopped = settledAt(withQueryContext({ timeoutMs: 300 }, () => sql`select pg_sleep(30) as late_cancel_victim`.execute(db)))
      await waitFor('the statement to run', async () => (await activeWithTag(database, 'late_cancel_victim')).length === 1)
      pooled.hold()
      control.hold()
      expect((await stopped).error).toBeInstanceOf(DeadlineExceededError)
      // The control query is given up on at ~300 ms past the deadline; the protocol cancel then
      // waits in the partition of the pool's proxy, which heals before it times out.
      await sleep(500)
      pooled.heal()
      const next = settledAt(withQueryContext({ timeoutMs: 5_000 }, () => sql<{ n: number }>`select pg_sleep(1.2), 11 as n`.execute(db)))
      await sleep(500)
      control.heal()
      const { error, value } = await next
      expect(error).toBeUndefined()
      expect((value as { rows: unknown[] }).rows).toEqual([{ pg_sleep: '', n: 11 }])
      expect(cancels[0]?.outcome?.confirmed).toBe(false)
      expect(cancels[0]?.destroyed).toBe(true)
    } finally {
      pooled.heal()
      control.heal()
      await db.destroy()
    }
  })
})
