import { Kysely, sql } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GovernedPostgresDialect, LoadShedError, withQueryContext, type CircuitState } from '../../src/index.js'
import { rejectionOf, sleep, waitFor } from '../support/governed.js'
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

describe('invariant 6 and the circuit breaker: the server goes away and comes back', () => {
  it('never crashes the process, opens the circuit while the server is down, and closes it after', async () => {
    const pool = new pg.Pool({ connectionString: server.url, max: 3, connectionTimeoutMillis: 2_000 })
    // retry: false: each query here is one connect attempt, so that the breaker's count is the test's (retries are test/retry's).
    const dialect = new GovernedPostgresDialect({ pool, circuitBreaker: { failureThreshold: 3, resetAfterMs: 300 }, retry: false })
    const db = new Kysely<any>({ dialect })
    const states: CircuitState[] = []
    const poolErrors: Error[] = []
    dialect.events.on('circuit', (state) => states.push(state))
    dialect.events.on('poolError', (error) => poolErrors.push(error))
    try {
      await Promise.all([1, 2, 3].map(() => sql`select pg_sleep(0.05)`.execute(db)))
      expect(dialect.poolStats().idle).toBe(3)

      await server.stop()
      // Idle clients see the shutdown: pg-pool emits 'error', which the dialect handles.
      await waitFor('pg-pool to report its idle clients failing', async () => poolErrors.length > 0 || pool.totalCount === 0)

      const failures: unknown[] = []
      for (let i = 0; i < 3; i++) failures.push(await rejectionOf(sql`select 1`.execute(db)))
      expect(failures.every((error) => !(error instanceof LoadShedError))).toBe(true)
      expect(dialect.poolStats().circuit).toBe('open')

      // A caller whose deadline comes before the next probe is refused at once: nothing it could wait for comes in time.
      const started = performance.now()
      const shed = await rejectionOf(withQueryContext({ timeoutMs: 20 }, () => sql`select 1`.execute(db)))
      expect(shed).toBeInstanceOf(LoadShedError)
      expect(shed).toMatchObject({ reason: 'circuit_open', criticality: 'critical' })
      expect(shed.retryAfterMs).toBeGreaterThan(0)
      expect(shed.retryAfterMs).toBeLessThanOrEqual(300)
      expect(performance.now() - started).toBeLessThan(100)

      // Callers that can wait are held for the probe: exactly one of them makes it (and fails: the server
      // is still down), and the others hear its outcome, circuit_open, without a connect of their own.
      const outcomes = await Promise.all([1, 2, 3, 4].map(() => rejectionOf(sql`select 1`.execute(db))))
      const probes = outcomes.filter((error) => !(error instanceof LoadShedError))
      expect(probes).toHaveLength(1)
      expect(outcomes.filter((error) => error instanceof LoadShedError && error.reason === 'circuit_open')).toHaveLength(3)
      expect(states).toEqual(['open', 'half_open', 'open'])

      await server.start()
      // Probes are at most resetAfterMs apart.
      await sleep(350)
      const { rows } = await sql<{ one: number }>`select 1 as one`.execute(db)
      expect(rows).toEqual([{ one: 1 }])
      expect(dialect.poolStats().circuit).toBe('closed')
      expect(states).toEqual(['open', 'half_open', 'open', 'half_open', 'closed'])
      await waitFor('the pool to be at rest', async () => dialect.poolStats().permits === 0)
    } finally {
      await db.destroy()
    }
  }, 60_000)
})
