import { Kysely, sql } from 'kysely'
import pg from 'pg'
import { Registry } from 'prom-client'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { attemptsOf, GovernedPostgresDialect, QueryCanceledError, withQueryContext, type RetryEvent, type RetryOptions } from '../../src/index.js'
import { METRIC_NAMES, registerPrometheusMetrics } from '../../src/telemetry/prometheus-metrics.js'
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()

const REQUESTS = 40

describe('retries of never-sent work stay within the pool budget when the server stays down', () => {
  let proxy: FaultProxy
  beforeEach(async () => {
    proxy = await startFaultProxy(database.url)
  })
  afterEach(() => proxy.close())

  /** Offers REQUESTS queries, 4 at a time, to a server whose address resets every connection; counts the connects that reached it. */
  async function offer(retry: RetryOptions | false): Promise<{ attempts: number; errors: unknown[]; events: RetryEvent[]; registry: Registry }> {
    // The breaker is off so that the budget alone bounds the attempts.
    const pool = new pg.Pool({ connectionString: proxy.url, max: 4 })
    const dialect = new GovernedPostgresDialect({ pool, retry, circuitBreaker: { failureThreshold: 0 }, warmConnections: false, controlConnection: { eager: false } })
    const events: RetryEvent[] = []
    dialect.events.on('retry', (event) => events.push(event))
    const registry = new Registry()
    registerPrometheusMetrics(dialect, { registry, poolName: 'down' })
    const db = new Kysely<any>({ dialect })
    const errors: unknown[] = []
    try {
      proxy.refuseFor(60_000)
      const before = proxy.accepted
      for (let i = 0; i < REQUESTS; i += 4) {
        const batch = [0, 1, 2, 3].map(() => withQueryContext({ timeoutMs: 2_000 }, () => sql`select 1`.execute(db)).then(() => undefined, (error: unknown) => error))
        errors.push(...(await Promise.all(batch)))
      }
      return { attempts: proxy.accepted - before, errors, events, registry }
    } finally {
      await db.destroy()
    }
  }

  it('attempts reaching the server stay at most maxTokens/2 above the offered requests, not a multiple of them', async () => {
    const budgeted = await offer({ maxAttempts: 3, backoff: { baseMs: 5, maxMs: 20 }, budget: { maxTokens: 10, tokenRatio: 0.1 } })
    const none = await offer(false)
    const retried = budgeted.events.filter((e) => e.outcome === 'retried').length
    console.log(
      `[connect-retries] server down, ${REQUESTS} requests: ${budgeted.attempts} connects with the budget (${retried} retries, ` +
        `${budgeted.events.filter((e) => e.outcome === 'budget').length} refused by it), ${none.attempts} with retry: false`,
    )
    expect(budgeted.errors.every((error) => error instanceof Error)).toBe(true)
    expect(none.attempts).toBe(REQUESTS)
    // At most 4 retries (tokens 10 → 6 allow, 5 does not), never maxAttempts × the load.
    expect(retried).toBe(4)
    expect(budgeted.attempts).toBeLessThanOrEqual(REQUESTS + 5)
    expect(budgeted.attempts).toBeGreaterThan(REQUESTS)
    const counted = (await budgeted.registry.getMetricsAsJSON()).find((m) => m.name === METRIC_NAMES.retries)?.values ?? []
    expect(counted.find((v) => v.labels['reason'] === 'connect_failed' && v.labels['outcome'] === 'retried')?.value).toBe(4)
    expect(counted.find((v) => v.labels['outcome'] === 'budget')?.value).toBeGreaterThan(30)
    // The error that reaches the caller says how many attempts it had.
    expect(Math.max(...budgeted.errors.map(attemptsOf))).toBeGreaterThan(1)
  }, 60_000)

  it('a connect that fails while the server is briefly unreachable succeeds on a retry within the deadline', async () => {
    const pool = new pg.Pool({ connectionString: proxy.url, max: 2 })
    const db = new Kysely<any>({ dialect: new GovernedPostgresDialect({ pool, retry: { maxAttempts: 12, backoff: { baseMs: 50, maxMs: 400 }, budget: { maxTokens: 30 } }, warmConnections: false, controlConnection: { eager: false } }) })
    try {
      proxy.refuseFor(100)
      const started = performance.now()
      const result = await withQueryContext({ timeoutMs: 3_000 }, () => sql<{ one: number }>`select 1 as one`.execute(db))
      console.log(`[connect-retries] served ${(performance.now() - started).toFixed(0)} ms after a 100 ms refusal, ${proxy.accepted} connects`)
      // Full jitter may draw short delays; 11 retries (up to 50+100+200+400×8 ms) outlast a 100 ms refusal.
      expect(result.rows).toEqual([{ one: 1 }])
      expect(proxy.accepted).toBeGreaterThan(1)
    } finally {
      await db.destroy()
    }
  })

  it('never starts a retry whose backoff would end after the deadline: the caller gets the connect error, with its attempts, not a deadline error', async () => {
    const pool = new pg.Pool({ connectionString: proxy.url, max: 4 })
    const dialect = new GovernedPostgresDialect({ pool, retry: { maxAttempts: 10, backoff: { baseMs: 1_000, maxMs: 1_000 } }, warmConnections: false, controlConnection: { eager: false } })
    const events: RetryEvent[] = []
    dialect.events.on('retry', (event) => events.push(event))
    const db = new Kysely<any>({ dialect })
    try {
      proxy.refuseFor(60_000)
      // Backoff draws from [0, 1000] ms; with 30 ms left almost no draw fits, and a retry that does not fit is not started.
      const errors = await Promise.all(
        [1, 2, 3].map(() => withQueryContext({ timeoutMs: 30 }, () => sql`select 1`.execute(db)).then(() => undefined, (error: unknown) => error)),
      )
      const codes = errors.map((error) => (error as { code?: string }).code)
      console.log(`[connect-retries] 30 ms budget, 1 s backoff: ${codes.join(', ')}; retry outcomes ${events.map((e) => e.outcome).join(', ')}`)
      expect(events.some((e) => e.outcome === 'deadline')).toBe(true)
      expect(codes).toContain('ECONNRESET')
      expect(codes).not.toContain('DEADLINE_EXCEEDED')
    } finally {
      await db.destroy()
    }
  })

  it('an abort during the backoff rejects at once, and no further attempt starts', async () => {
    // Full jitter drawn at 99% of the cap: the backoff after the first failure is ~990 ms, the abort comes ~100 ms into it.
    const random = vi.spyOn(Math, 'random').mockReturnValue(0.99)
    const pool = new pg.Pool({ connectionString: proxy.url, max: 2 })
    const dialect = new GovernedPostgresDialect({ pool, retry: { maxAttempts: 5, backoff: { baseMs: 1_000, maxMs: 1_000 } }, warmConnections: false, controlConnection: { eager: false } })
    const events: RetryEvent[] = []
    const db = new Kysely<any>({ dialect })
    try {
      proxy.refuseFor(60_000)
      const controller = new AbortController()
      let abortedAt = Infinity
      dialect.events.on('retry', (event) => {
        events.push(event)
        setTimeout(() => {
          abortedAt = performance.now()
          controller.abort(new Error('client went away'))
        }, 100)
      })
      const before = proxy.accepted
      const error = await withQueryContext({ timeoutMs: 5_000, signal: controller.signal }, () => sql`select 1`.execute(db)).then(
        () => undefined,
        (caught: unknown) => caught,
      )
      const rejectedAfterMs = performance.now() - abortedAt
      const attempts = proxy.accepted - before
      // Past the backoff the retry would have gone: it must not.
      await new Promise((resolve) => setTimeout(resolve, 1_200))
      console.log(`[connect-retries] abort in the backoff: ${(error as Error).constructor.name} ${rejectedAfterMs.toFixed(1)} ms after the abort; connects ${attempts}, then ${proxy.accepted - before}`)
      expect(error).toBeInstanceOf(QueryCanceledError)
      expect((error as QueryCanceledError).phase).toBe('waiting')
      expect(events.map((e) => `${e.outcome}#${e.attempt}`)).toEqual(['retried#1'])
      expect(rejectedAfterMs).toBeLessThan(200)
      expect(attempts).toBe(1)
      expect(proxy.accepted - before).toBe(1)
    } finally {
      random.mockRestore()
      await db.destroy()
    }
  })
})
