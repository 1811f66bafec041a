import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { withQueryContext } from '../../src/index.js'
import { sleep, waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'
import { governedThrough, settledAt, useFaultProxy } from './support.js'

const database = useTestDatabase()
const proxy = useFaultProxy(database)

describe('one control connection, through a partition that heals (issue 12)', () => {
  it('cancels given up on unanswered behind the partition do not open control connections that all reach the server at the heal', async () => {
    const faults = await proxy.start()
    const max = 3
    const app = 'faults-control'
    const { db } = governedThrough(faults.url, { max, application_name: app }, { warmConnections: false, controlConnection: { timeoutMs: 200 } })
    let sampling = true
    let mostControl = 0
    const sampler = (async () => {
      while (sampling) {
        const rows = await database.admin<{ n: number }>(`select count(*)::int as n from pg_stat_activity where application_name = $1`, [`${app} (pg-governor control)`])
        mostControl = Math.max(mostControl, rows[0]?.n ?? 0)
        await sleep(2)
      }
    })()
    try {
      await Promise.all(Array.from({ length: max }, () => sql`select 1`.execute(db)))
      await waitFor('the control connection', async () => mostControl === 1)
      const controllers = Array.from({ length: max }, () => new AbortController())
      const stopped = controllers.map((controller, i) => settledAt(withQueryContext({ timeoutMs: 10_000, signal: controller.signal }, () => sql`select pg_sleep(2), ${i}::int as n`.execute(db))))
      await sleep(100)
      faults.hold()
      // Three aborts 300 ms apart: three cancel batches, each given up on unanswered after 200 ms.
      for (const controller of controllers) {
        controller.abort()
        await sleep(300)
      }
      faults.heal()
      await Promise.all(stopped)
      await sleep(500)
      console.log(`[control-bound] most control connections seen at the server: ${mostControl}`)
      expect(mostControl).toBe(1)
    } finally {
      sampling = false
      await sampler
      faults.clear()
      await db.destroy()
    }
  })
})
