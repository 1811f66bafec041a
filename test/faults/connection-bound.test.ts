import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { withQueryContext } from '../../src/index.js'
import { sleep, waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'
import { governedThrough, sampleBackends, settledAt, useFaultProxy } from './support.js'

const database = useTestDatabase()
const proxy = useFaultProxy(database)

describe('server connections never above pool max + control (issue 12)', () => {
  it('through a partition that heals, with statements stopped behind it and callers waiting for their connections', async () => {
    const faults = await proxy.start()
    const max = 2
    const app = 'faults-bound'
    const { db, dialect } = governedThrough(faults.url, { max, application_name: app }, { warmConnections: false, controlConnection: { timeoutMs: 200 } })
    let destroyedByCancel = 0
    dialect.events.on('cancel', (event) => {
      if (event.destroyed) destroyedByCancel++
    })
    const sampler = sampleBackends(database, app)
    const most = sampler.most
    try {
      await Promise.all(Array.from({ length: max }, () => sql`select 1`.execute(db)))
      await waitFor('the control connection', async () => most().length === max + 1)
      // Statements that will be stopped behind the partition, and callers that keep coming through it and past the heal.
      const stream: Promise<unknown>[] = []
      let streaming = true
      const callers = (async () => {
        for (let i = 0; streaming; i++) {
          // Half stopped by their deadline, half by an abort while their deadline (and statement_timeout) is far: those keep running at the server.
          const signal = AbortSignal.timeout(300)
          const context = i % 2 === 0 ? { timeoutMs: 300 } : { timeoutMs: 10_000, signal }
          stream.push(settledAt(withQueryContext(context, () => sql`select pg_sleep(${i % 4 < 2 ? 4 : 0.01}), ${i}::int as n`.execute(db))))
          await sleep(20)
        }
      })()
      await sleep(100)
      faults.hold()
      await sleep(1_500)
      faults.heal()
      await sleep(1_000)
      streaming = false
      await callers
      await Promise.all(stream)
      await waitFor('the pool to return to rest', async () => dialect.poolStats().permits === 0 && dialect.poolStats().waiting === 0, 8_000)
      await sleep(300)
      console.log(`[connection-bound] ${stream.length} queries, ${destroyedByCancel} connections destroyed for an unconfirmed cancel; most server connections seen: ${most().length} (max ${max} + control 1): ${JSON.stringify(most())}`)
      expect(destroyedByCancel).toBeGreaterThan(0)
      expect(most().length).toBeLessThanOrEqual(max + 1)
    } finally {
      await sampler.stop()
      faults.heal()
      await db.destroy()
    }
  })
})
