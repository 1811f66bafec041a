import { Kysely, sql } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GovernedPostgresDialect, withQueryContext, type RetryEvent, type RetryOptions } from '../../src/index.js'
import { requestsThroughRestart } from '../support/restart-window.js'
import { startEmbeddedServer, type ControllableServer } from '../support/test-server.js'

// A server of its own, which it stops and starts (see test/admission/restart.test.ts for why not the suite's).
let server: ControllableServer
beforeAll(async () => {
  server = await startEmbeddedServer()
}, 120_000)
afterAll(() => server?.destroy())

const RATE_PER_S = 100
const UP_BEFORE_MS = 400
const DOWN_MS = 1_000
const UP_AFTER_MS = 1_000
/** Each request's budget: it outlasts the outage (plus the restart's own seconds on a busy machine) for most requests sent during it. */
const TIMEOUT_MS = 6_000

interface Outcome {
  readonly sentAt: number
  readonly ok: boolean
  readonly code: string | undefined
}

/** Steady reads through a restart; returns each request's outcome and when the server stopped and was ready again. */
async function readsThroughRestart(retry: RetryOptions | false): Promise<{ outcomes: Outcome[]; stopping: number; ready: number; events: RetryEvent[] }> {
  const pool = new pg.Pool({ connectionString: server.url, max: 4 })
  const dialect = new GovernedPostgresDialect({ pool, retry })
  const events: RetryEvent[] = []
  dialect.events.on('retry', (event) => events.push(event))
  const db = new Kysely<any>({ dialect })
  try {
    await sql`select 1`.execute(db)
    const plan = { ratePerS: RATE_PER_S, upBeforeMs: UP_BEFORE_MS, downMs: DOWN_MS, upAfterMs: UP_AFTER_MS }
    const run = await requestsThroughRestart(server, plan, (sentAt) =>
      withQueryContext({ timeoutMs: TIMEOUT_MS }, () => sql`select 1`.execute(db)).then(
        (): Outcome => ({ sentAt, ok: true, code: undefined }),
        (error: unknown): Outcome => ({ sentAt, ok: false, code: String((error as { code?: unknown }).code ?? (error as Error).message) }),
      ),
    )
    return { ...run, events }
  } finally {
    await db.destroy()
  }
}

describe('a server restart under steady reads, with retries of never-sent work and waitForRecovery', () => {
  it('requests that arrive during the outage and whose budget outlasts it succeed after the server is back', async () => {
    const { outcomes, stopping, ready, events } = await readsThroughRestart({ waitForRecovery: true })
    // Sent while the server was down (after the stop began, before it was ready) with a deadline past the restart.
    const duringOutage = outcomes.filter((o) => o.sentAt > stopping + 50 && o.sentAt < ready && o.sentAt + TIMEOUT_MS > ready + 500)
    const succeeded = duringOutage.filter((o) => o.ok).length
    const failures = [...new Set(duringOutage.filter((o) => !o.ok).map((o) => o.code))]
    console.log(
      `[restart-retries] outage ${(ready - stopping).toFixed(0)} ms; ${duringOutage.length} requests sent during it, ${succeeded} succeeded` +
        ` (${((100 * succeeded) / Math.max(1, duringOutage.length)).toFixed(1)}%); failures: ${failures.join(', ') || 'none'};` +
        ` connect retries ${events.filter((e) => e.outcome === 'retried').length}, refused by the budget ${events.filter((e) => e.outcome === 'budget').length}`,
    )
    expect(duringOutage.length).toBeGreaterThan(20)
    // The target is 98%; the margin is for a shared machine.
    expect(succeeded).toBeGreaterThanOrEqual(0.95 * duringOutage.length)
  }, 60_000)
})
