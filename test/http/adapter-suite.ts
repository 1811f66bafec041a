import { request as httpRequest, type OutgoingHttpHeaders, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { sql, type Kysely } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { currentQueryContext, withQueryContext, type CancelEvent, type QueryEvent } from '../../src/index.js'
import type { ClientGoneEvent, GovernedRequest, GovernedRequestOptions } from '../../src/http/governed-request.js'
import type { MetricsRegistry } from '../../src/http/metrics-endpoint.js'
import { activeWithTag, expectBackendIdle, governed, pidOfRunning, waitFor, type GovernedSetup } from '../support/governed.js'
import { useTestDatabase, type TestDatabase } from '../support/test-database.js'

/**
 * The routes every adapter's app must serve, each under the options named here:
 *
 * | route              | options            | does                                                   |
 * | ------------------ | ------------------ | ------------------------------------------------------ |
 * | GET /sleep?tag=t   | `sleep`            | `kit.sleep(tag)`: `select pg_sleep(5) as t`            |
 * | GET /report        | `report`           | `kit.selectOne()` (sheddable)                          |
 * | GET /critical      | `critical`         | `kit.selectOne()`                                      |
 * | GET /timeout/reject| `reject`           | `kit.timeoutInfo(governed)`                            |
 * | GET /timeout/ignore| `ignore`           | `kit.timeoutInfo(governed)`                            |
 * | GET /boom          | `critical`         | throws `new Error('boom')` (the framework answers 500) |
 * | GET /metrics       | none               | serves `kit.registry`                                  |
 */
export interface AdapterKit {
  readonly db: Kysely<any>
  readonly options: {
    readonly sleep: GovernedRequestOptions
    readonly report: GovernedRequestOptions
    readonly critical: GovernedRequestOptions
    readonly reject: GovernedRequestOptions
    readonly ignore: GovernedRequestOptions
  }
  readonly registry: MetricsRegistry
  sleep(tag: string | undefined): Promise<{ readonly slept: true }>
  selectOne(): Promise<{ readonly one: number }>
  timeoutInfo(governed: GovernedRequest | undefined | null): Promise<TimeoutInfo>
}

export interface TimeoutInfo {
  readonly timeoutMs: number
  readonly source: 'header' | 'default'
  readonly capped: boolean
  readonly invalid: string | null
  /** Seen from inside the handler's query context. */
  readonly remainingMs: number
}

export interface RunningApp {
  readonly url: string
  close(): Promise<void>
}

export const METRICS_TEXT = '# HELP http_suite_up 1 when up\n# TYPE http_suite_up gauge\nhttp_suite_up 1\n'

/** Listens on 127.0.0.1, port 0, and closes with every keep-alive connection. */
export async function listen(server: Server): Promise<RunningApp> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  return { url: urlOf(server), close: () => closeServer(server) }
}

export function urlOf(server: Server): string {
  const { port } = server.address() as AddressInfo
  return `http://127.0.0.1:${port}`
}

export function closeServer(server: Server): Promise<void> {
  server.closeAllConnections()
  return new Promise((resolve) => server.close(() => resolve()))
}

interface RawResponse {
  readonly status: number
  readonly headers: Record<string, string | string[] | undefined>
  readonly body: string
}

/** A node:http request, for what fetch cannot send (a header sent twice, a value with a leading space). */
export function rawGet(url: string, headers: OutgoingHttpHeaders): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'GET', headers, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

interface TableRow {
  readonly name: string
  /** Header value(s); `undefined` sends no header. */
  readonly value: string | readonly string[] | undefined
  /** Send through node:http rather than fetch (which normalises whitespace and joins repeats). */
  readonly raw?: boolean
  /** What the route answers in each mode: a reason means 400 (reject) / the default (ignore). */
  readonly expected: { readonly timeoutMs: number; readonly source: 'header' | 'default'; readonly capped?: boolean } | { readonly invalid: string }
}

const DEFAULT_MS = 1_500
const MAX_MS = 3_000

/** The bad-input table, plus the good values around it. */
export const BAD_INPUT_TABLE: readonly TableRow[] = [
  { name: 'absent', value: undefined, expected: { timeoutMs: DEFAULT_MS, source: 'default' } },
  { name: '"250"', value: '250', expected: { timeoutMs: 250, source: 'header' } },
  { name: '""', value: '', expected: { invalid: 'empty' } },
  { name: '"abc"', value: 'abc', expected: { invalid: 'malformed' } },
  { name: '"-1"', value: '-1', expected: { invalid: 'malformed' } },
  { name: '"0"', value: '0', expected: { invalid: 'zero' } },
  { name: '"1.5"', value: '1.5', expected: { invalid: 'malformed' } },
  { name: '"1e3"', value: '1e3', expected: { invalid: 'malformed' } },
  // HTTP strips the space before the handler sees it (RFC 9110 §5.5); we would trim it too.
  { name: '" 100"', value: ' 100', raw: true, expected: { timeoutMs: 100, source: 'header' } },
  { name: '"100, 200" (the header sent twice)', value: ['100', '200'], raw: true, expected: { invalid: 'multiple' } },
  { name: '"100, 200" (one line)', value: '100, 200', expected: { invalid: 'multiple' } },
  { name: '"99999999999999999999"', value: '99999999999999999999', expected: { timeoutMs: MAX_MS, source: 'header', capped: true } },
  { name: 'a 10 kB value of digits', value: '9'.repeat(10 * 1024), expected: { invalid: 'too_long' } },
]

/**
 * The behaviour every adapter must show, against a real server, a real HTTP
 * client and a real Postgres. `start` builds the framework's app on the kit's
 * routes and listens on 127.0.0.1:0.
 */
export function describeAdapter(name: string, start: (kit: AdapterKit) => Promise<RunningApp>): AdapterHarness {
  const database = useTestDatabase()
  const setup = governed(
    database,
    { max: 2, application_name: `http-${name}` },
    // Two connections: one in use is utilisation 0.5, where sheddable work is refused.
    { admission: { utilisationThresholds: { sheddable: 0.5 }, feasibility: false } },
  )
  const clientGone: ClientGoneEvent[] = []
  const cancels: CancelEvent[] = []
  const queries: QueryEvent[] = []
  setup.dialect.events.on('cancel', (event) => cancels.push(event))
  setup.dialect.events.on('query', (event) => queries.push(event))
  let handled = 0
  const onClientGone = (event: ClientGoneEvent): void => {
    clientGone.push(event)
  }
  const kit: AdapterKit = {
    db: setup.db,
    options: {
      sleep: { defaultTimeoutMs: 10_000, maxTimeoutMs: 30_000, criticality: 'critical', onClientGone },
      report: { defaultTimeoutMs: 2_000, criticality: 'sheddable', domain: 'report', onClientGone },
      critical: { defaultTimeoutMs: 2_000, criticality: 'critical', onClientGone },
      reject: { defaultTimeoutMs: DEFAULT_MS, maxTimeoutMs: MAX_MS, onInvalidTimeout: 'reject', onClientGone },
      ignore: { defaultTimeoutMs: DEFAULT_MS, maxTimeoutMs: MAX_MS, onInvalidTimeout: 'ignore', onClientGone },
    },
    registry: { contentType: 'text/plain; version=0.0.4; charset=utf-8', metrics: async () => METRICS_TEXT },
    async sleep(tag) {
      if (!tag || !/^[a-z0-9_]{1,40}$/.test(tag)) throw new Error(`bad tag ${tag}`)
      await sql`select pg_sleep(5) as ${sql.raw(tag)}`.execute(setup.db)
      return { slept: true }
    },
    async selectOne() {
      const { rows } = await sql<{ one: number }>`select 1 as one`.execute(setup.db)
      return { one: rows[0]?.one ?? 0 }
    },
    async timeoutInfo(governedRequest) {
      handled++
      if (!governedRequest) throw new Error('the route is not governed')
      await sql`select 1`.execute(setup.db)
      const context = currentQueryContext()
      return {
        timeoutMs: governedRequest.timeoutMs,
        source: governedRequest.source,
        capped: governedRequest.capped,
        invalid: governedRequest.invalidTimeout?.reason ?? null,
        remainingMs: context ? context.deadline - performance.now() : Infinity,
      }
    },
  }

  let app: RunningApp | undefined
  const harness: AdapterHarness = {
    database,
    setup,
    kit,
    clientGone,
    get url() {
      if (!app) throw new Error('the app is not started')
      return app.url
    },
  }

  beforeAll(async () => {
    app = await start(kit)
  })
  afterAll(async () => {
    await app?.close()
    await setup.db.destroy()
  })



  async function expectPoolAtRest(): Promise<void> {
    await waitFor('the pool to return to rest', async () => {
      const stats = setup.dialect.poolStats()
      return stats.permits === 0 && stats.waiting === 0 && stats.used === 0
    })
  }

  describe(`${name}: the request's deadline reaches the query`, () => {
    it('X-Request-Timeout: 200 on a 5 s query answers 504, and the backend stops', async () => {
      const tag = `${name}_deadline`
      const started = performance.now()
      const response = await fetch(`${harness.url}/sleep?tag=${tag}`, { headers: { 'x-request-timeout': '200' } })
      const elapsed = performance.now() - started
      expect(response.status).toBe(504)
      expect(response.headers.get('content-type')).toMatch(/^application\/json/)
      expect(await response.json()).toEqual({ error: { code: 'DEADLINE_EXCEEDED', message: expect.any(String) } })
      expect(elapsed).toBeGreaterThanOrEqual(195)
      // Not a timing claim: the statement sleeps 5 s, so anything near 200 ms proves the header's deadline fired.
      expect(elapsed).toBeLessThan(3_000)
      // The statement itself carried the header's budget and was stopped while running on the server.
      const event = await waitFor('the query event', async () => queries.find((query) => query.sql?.includes(tag)))
      expect(event).toMatchObject({ outcome: 'deadline_exceeded', phase: 'running', criticality: 'critical' })
      // What was left of the 200 ms once connected: on a busy machine connecting can take most of it, so only the
      // bound from above is a claim (the header's budget, not another one, reached the statement).
      expect(event.budgetMs).toBeGreaterThan(0)
      expect(event.budgetMs).toBeLessThanOrEqual(200)
      expect(typeof event.pid).toBe('number')
      await expectBackendIdle(database, event.pid as number)
      expect(await activeWithTag(database, tag)).toEqual([])
      await expectPoolAtRest()
    })
  })

  describe(`${name}: a client that disconnects`, () => {
    it('cancels its backend; nothing is written and the 499 is reported', async () => {
      const tag = `${name}_disconnect`
      const controller = new AbortController()
      const pending = fetch(`${harness.url}/sleep?tag=${tag}`, { headers: { 'x-request-timeout': '20000' }, signal: controller.signal })
      pending.catch(() => {})
      const pid = await pidOfRunning(database, tag)
      clientGone.length = 0
      cancels.length = 0
      controller.abort()
      await expect(pending).rejects.toThrow()
      await expectBackendIdle(database, pid)
      await waitFor('the cancel event', async () => cancels.some((event) => event.pid === pid && event.reason === 'abort'))
      await waitFor('the 499 report', async () => clientGone.length === 1)
      expect(clientGone[0]).toMatchObject({ status: 499, method: 'GET', timeoutMs: 20_000, criticality: 'critical' })
      expect(clientGone[0]?.url).toMatch(/^\/sleep\?tag=/)
      await expectPoolAtRest()
      // The server carries on.
      const after = await fetch(`${harness.url}/critical`)
      expect(after.status).toBe(200)
      expect(await after.json()).toEqual({ one: 1 })
    })
  })

  describe(`${name}: shedding`, () => {
    it('answers a sheddable route 503 with Retry-After while critical work still runs', async () => {
      const holder = withQueryContext({ criticality: 'critical_plus' }, () => sql`select pg_sleep(0.8)`.execute(setup.db))
      await waitFor('one connection in use', async () => setup.dialect.poolStats().used === 1)
      const shed = await fetch(`${harness.url}/report`)
      expect(shed.status).toBe(503)
      const retryAfter = shed.headers.get('retry-after')
      expect(retryAfter).toMatch(/^[1-9][0-9]*$/)
      const body = (await shed.json()) as { error: { retryAfterMs: number } }
      expect(body).toEqual({ error: { code: 'LOAD_SHED', message: expect.any(String), retryAfterMs: expect.any(Number) } })
      expect(Number(retryAfter)).toBe(Math.max(1, Math.ceil(body.error.retryAfterMs / 1000)))
      const critical = await fetch(`${harness.url}/critical`)
      expect(critical.status).toBe(200)
      await holder
      await expectPoolAtRest()
      const later = await fetch(`${harness.url}/report`)
      expect(later.status).toBe(200)
    })
  })

  describe(`${name}: other errors`, () => {
    it("go to the framework's own error handling", async () => {
      const response = await fetch(`${harness.url}/boom`)
      expect(response.status).toBe(500)
      await response.arrayBuffer()
    })
  })

  describe(`${name}: /metrics`, () => {
    it('serves the registry', async () => {
      const response = await fetch(`${harness.url}/metrics`)
      expect(response.status).toBe(200)
      expect(response.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8')
      expect(await response.text()).toBe(METRICS_TEXT)
    })
  })

  describe(`${name}: the bad-input table`, () => {
    const cases = BAD_INPUT_TABLE.flatMap((row) => (['reject', 'ignore'] as const).map((mode) => ({ ...row, mode })))
    it.each(cases)('$name with $mode', async (row) => {
      const url = `${harness.url}/timeout/${row.mode}`
      const before = handled
      let status: number
      let contentType: string | null | undefined
      let text: string
      if (row.raw) {
        const response = await rawGet(url, row.value === undefined ? {} : { 'x-request-timeout': row.value as string | string[] })
        status = response.status
        contentType = response.headers['content-type'] as string | undefined
        text = response.body
      } else {
        const response = await fetch(url, { headers: row.value === undefined ? {} : { 'x-request-timeout': row.value as string } })
        status = response.status
        contentType = response.headers.get('content-type')
        text = await response.text()
      }
      const body = JSON.parse(text)
      expect(contentType).toMatch(/^application\/json/)
      if ('invalid' in row.expected && row.mode === 'reject') {
        expect(status).toBe(400)
        expect(body).toEqual({
          error: { code: 'INVALID_REQUEST_TIMEOUT', message: expect.stringMatching(/^x-request-timeout /), header: 'x-request-timeout', reason: row.expected.invalid },
        })
        // A clear message, not an echo of a 10 kB value.
        expect(body.error.message.length).toBeLessThan(200)
        expect(handled).toBe(before)
        return
      }
      expect(status).toBe(200)
      expect(handled).toBe(before + 1)
      const expected =
        'invalid' in row.expected
          ? { timeoutMs: DEFAULT_MS, source: 'default', capped: false, invalid: row.expected.invalid }
          : { timeoutMs: row.expected.timeoutMs, source: row.expected.source, capped: row.expected.capped ?? false, invalid: null }
      expect(body).toMatchObject(expected)
      // Never unbounded: the handler's context carries the budget.
      expect(body.remainingMs).toBeGreaterThan(0)
      expect(body.remainingMs).toBeLessThanOrEqual(expected.timeoutMs)
    })
  })

  return harness
}

export interface AdapterHarness {
  readonly database: TestDatabase
  readonly setup: GovernedSetup
  readonly kit: AdapterKit
  readonly clientGone: ClientGoneEvent[]
  readonly url: string
}
