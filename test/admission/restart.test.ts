import { Kysely, sql } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GovernedPostgresDialect, type CircuitState } from '../../src/index.js'
import { requestsThroughRestart } from '../support/restart-window.js'
import { startEmbeddedServer, type ControllableServer } from '../support/test-server.js'

// Not the suite's server (inject('pgUrl')), on purpose: this file stops and starts
// its server. The suite's one server is shared by every file running at the same
// time (a database each), and it may not be ours to stop (PG_TEST_URL, or a
// container); stopping it would fail the other files. A fault proxy in front of
// it would not do either: the point is what a real shutdown does to a pool (idle
// clients get FATAL 57P01, connections are refused while it is down, then a
// fresh server). So it starts an embedded PostgreSQL of its own, whatever the
// suite's source is.
let server: ControllableServer
beforeAll(async () => {
  server = await startEmbeddedServer()
}, 120_000)
afterAll(() => server?.destroy())

const RATE_PER_S = 200
const UP_BEFORE_MS = 500
const DOWN_MS = 1_000
const UP_AFTER_MS = 1_500

interface Outcome {
  readonly sentAt: number
  readonly settledAt: number
  readonly ok: boolean
}

describe('recovery after a server restart, with the default options, as a new user would have it', () => {
  it('survives, sheds while the server is down, and serves again within milliseconds of it being ready', async () => {
    const uncaught: unknown[] = []
    const onUncaught = (error: unknown): void => void uncaught.push(error)
    process.on('uncaughtException', onUncaught)
    process.on('unhandledRejection', onUncaught)
    const pool = new pg.Pool({ connectionString: server.url })
    const dialect = new GovernedPostgresDialect({ pool })
    const db = new Kysely<any>({ dialect })
    const states: CircuitState[] = []
    dialect.events.on('circuit', (state) => states.push(state))
    try {
      await sql`select 1`.execute(db)
      const plan = { ratePerS: RATE_PER_S, upBeforeMs: UP_BEFORE_MS, downMs: DOWN_MS, upAfterMs: UP_AFTER_MS }
      const { outcomes, stopping, ready } = await requestsThroughRestart(server, plan, (sentAt) =>
        sql`select 1`.execute(db).then(
          (): Outcome => ({ sentAt, settledAt: performance.now(), ok: true }),
          (): Outcome => ({ sentAt, settledAt: performance.now(), ok: false }),
        ),
      )

      const firstAfterReady = Math.min(...outcomes.filter((o) => o.ok && o.sentAt > stopping).map((o) => o.settledAt)) - ready
      const whileUp = outcomes.filter((o) => o.sentAt < stopping || o.sentAt >= ready)
      const succeeded = outcomes.filter((o) => o.ok).length
      console.log(
        `[restart] ${outcomes.length} requests, ${whileUp.length} sent while the server was up, ${succeeded} succeeded;` +
          ` first success ${firstAfterReady.toFixed(0)} ms after the server was ready;` +
          ` circuit ${states[0]}, ${states.filter((s) => s === 'half_open').length} probes, ${states.at(-1)}`,
      )
      expect(uncaught).toEqual([])
      // The breaker did open (the test exercises it), probed, and closed.
      expect(states).toContain('open')
      expect(states).toContain('half_open')
      expect(states.at(-1)).toBe('closed')
      // Probes are short while the outage is: about 50 ms here. Generous for a shared machine; it was ~1 s.
      expect(firstAfterReady).toBeLessThan(500)
      // Work sent while the server was up succeeds: only those caught by the stop and the short wait for a probe fail.
      expect(succeeded).toBeGreaterThanOrEqual(0.9 * whileUp.length)
    } finally {
      process.off('uncaughtException', onUncaught)
      process.off('unhandledRejection', onUncaught)
      await db.destroy()
    }
  }, 60_000)
})
