import { sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { withQueryContext } from '../../src/index.js'
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js'
import { sleep, waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'
import { governedThrough, settledAt } from './support.js'

const database = useTestDatabase()
let faults: FaultProxy | undefined
afterEach(async () => {
  await faults?.close()
  faults = undefined
})

interface Backend {
  readonly pid: number
  readonly app: string
  readonly state: string | null
  readonly query: string
}

describe('server connections never above pool max + control (issue 12)', () => {
  it('through a partition that heals, with statements stopped behind it and callers waiting for their connections', async () => {
    faults = await startFaultProxy(database.url)
    const max = 2
    const app = 'faults-bound'
    const { db, dialect } = governedThrough(faults.url, { max, application_name: app }, { warmConnections: false, controlConnection: { timeoutMs: 200 } })
    let destroyedByCancel = 0
    dialect.events.on('cancel', (event) => {
      if (event.destroyed) destroyedByCancel++
    })
    let sampling = true
    let most: Backend[] = []
    const sampler = (async () => {
      while (sampling) {
        const rows = await database.admin<Backend>(`select pid, application_name as app, state, left(query, 40) as query from pg_stat_activity where application_name like $1`, [`${app}%`])
        if (rows.length > most.length) most = rows
        await sleep(2)
      }
    })()
    try {
      await Promise.all(Array.from({ length: max }, () => sql`select 1`.execute(db)))
      await waitFor('the control connection', async () => most.length === max + 1)
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
      console.log(`[connection-bound] ${stream.length} queries, ${destroyedByCancel} connections destroyed for an unconfirmed cancel; most server connections seen: ${most.length} (max ${max} + control 1): ${JSON.stringify(most)}`)
      expect(destroyedByCancel).toBeGreaterThan(0)
      expect(most.length).toBeLessThanOrEqual(max + 1)
    } finally {
      sampling = false
      await sampler
      faults.heal()
      await db.destroy()
    }
  })
})
