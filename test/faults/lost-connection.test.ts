import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { withQueryContext } from '../../src/index.js'
import { sleep, waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'
import { governedThrough, LATE_MARGIN_MS, sampleBackends, settledAt, useFaultProxy } from './support.js'

const database = useTestDatabase()
const proxy = useFaultProxy(database)

describe('a connection lost for good: server connections never above pool max + control (issue 12)', () => {
  it("with toxiproxy's timeout (data dropped, then every connection closed), a backend still running its statement keeps its permit until it is gone", async () => {
    const faults = await proxy.start()
    const max = 2
    const app = 'faults-lost'
    const { db, dialect } = governedThrough(faults.url, { max, application_name: app }, { warmConnections: false, controlConnection: { timeoutMs: 200 } })
    let mostHeld = 0
    const sampler = sampleBackends(database, app, () => (mostHeld = Math.max(mostHeld, dialect.poolStats().lostBackends)))
    const most = sampler.most
    try {
      await Promise.all(Array.from({ length: max }, () => sql`select 1`.execute(db)))
      await waitFor('the control connection', async () => most().length === max + 1)
      // Two statements with a far deadline (statement_timeout 10 s), one of them aborted: the server runs both on for 3 s.
      const controller = new AbortController()
      const lost = [
        settledAt(withQueryContext({ timeoutMs: 10_000 }, () => sql`select pg_sleep(3), 1 as n`.execute(db))),
        settledAt(withQueryContext({ timeoutMs: 10_000, signal: controller.signal }, () => sql`select pg_sleep(3), 2 as n`.execute(db))),
      ]
      await waitFor('both statements running at the server', async () => most().filter((backend) => backend.query.includes('pg_sleep(3)')).length === 2 || (await running(app)) === 2)
      // Callers that keep coming through the fault and past its end, two at a time (so that both connections are
      // wanted), each with a 1.5 s deadline.
      const callers: Promise<{ readonly startedAt: number; readonly at: number; readonly error: unknown }>[] = []
      let calling = true
      const calls = (async () => {
        while (calling) {
          const startedAt = performance.now()
          for (let i = 0; i < max; i++) {
            callers.push(settledAt(withQueryContext({ timeoutMs: 1_500 }, () => sql`select pg_sleep(0.02)`.execute(db))).then(({ at, error }) => ({ startedAt, at, error })))
          }
          await sleep(50)
        }
      })()
      faults.timeout(300)
      await sleep(100)
      controller.abort()
      await sleep(700)
      // The network is back: the lost backends still sleep at the server (about 2 s more).
      faults.clear()
      await sleep(1_500)
      calling = false
      await calls
      const settled = await Promise.all(callers)
      await Promise.all(lost)
      await waitFor('the pool to return to rest', async () => dialect.poolStats().permits === 0 && dialect.poolStats().waiting === 0, 8_000)
      // The lost backends were terminated once the control connection could reach the server again, not left to sleep on.
      const stillSleeping = await running(app)
      const failed = settled.filter((outcome) => outcome.error !== undefined)
      console.log(
        `[lost-connection] ${settled.length} callers, ${failed.length} failed (${[...new Set(failed.map((o) => (o.error as Error).name))].join(', ')}); ` +
          `at most ${mostHeld} permits held for lost backends; most server connections seen: ${most().length} (max ${max} + control 1): ${JSON.stringify(most())}`,
      )
      // Every caller settled by its deadline, whatever it waited for; failures are the fault's own (deadline, shed, connection).
      for (const outcome of settled) expect(outcome.at - outcome.startedAt).toBeLessThan(1_500 + LATE_MARGIN_MS)
      // Callers that came once the network was back and the lost backends were gone succeeded.
      expect(settled.slice(-6).map((outcome) => outcome.error)).toEqual([undefined, undefined, undefined, undefined, undefined, undefined])
      expect(most().length).toBeLessThanOrEqual(max + 1)
      expect(stillSleeping).toBe(0)
    } finally {
      await sampler.stop()
      faults.clear()
      await db.destroy()
    }
  })
})

/** Backends of `app` running pg_sleep, seen from outside the proxy. */
async function running(app: string): Promise<number> {
  const rows = await database.admin<{ n: number }>(`select count(*)::int as n from pg_stat_activity where application_name like $1 and query like '%pg_sleep(3)%' and state = 'active'`, [`${app}%`])
  return rows[0]?.n ?? 0
}
