import { Writable } from 'node:stream'
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks'
import { context as otelContext, trace } from '@opentelemetry/api'
import { sql } from 'kysely'
import pino from 'pino'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { withQueryContext } from '../../src/index.js'
import { activeWithTag, governed, rejectionOf, waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()
const lines: Record<string, unknown>[] = []
const sink = new Writable({
  write(chunk: Buffer, _encoding, done) {
    for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>)
    done()
  },
})
const logger = pino({ level: 'debug' }, sink)
const SECRET = 's3cr3t-card-4111111111111111'
const { db, dialect } = governed(
  database,
  { max: 2 },
  { logger, logging: { slowQueryMs: 100 }, policies: { payment: { criticality: 'critical' } }, sqlComment: true, admission: { utilisationThresholds: { sheddable: 0.5 } } },
)
afterAll(() => db.destroy())
beforeAll(() => {
  otelContext.setGlobalContextManager(new AsyncLocalStorageContextManager().enable())
})
afterAll(() => otelContext.disable())

const TRACE_ID = '0af7651916cd43dd8448eb211c80319c'
const SPAN_ID = 'b7ad6b7169203331'

function inSpan<T>(fn: () => T): T {
  const span = trace.wrapSpanContext({ traceId: TRACE_ID, spanId: SPAN_ID, traceFlags: 1 })
  return otelContext.with(trace.setSpan(otelContext.active(), span), fn)
}

function logged(message: string): Record<string, unknown>[] {
  return lines.filter((line) => line['msg'] === message)
}

describe('structured logs', () => {
  it('logs a deadline exceeded with its fields, trace ids and SQL, never the parameter values', async () => {
    await waitFor('OpenTelemetry to load', async () => {
      // The dialect loads @opentelemetry/api in the background; a context made after that carries the span.
      return inSpan(() => withQueryContext({}, async () => (await import('../../src/context/query-context.js')).currentQueryContext()?.trace !== undefined))
    })
    const error = await rejectionOf(
      inSpan(() =>
        withQueryContext({ timeoutMs: 150, domain: 'payment' }, () => sql`select pg_sleep(5), ${SECRET}::text as log_deadline`.execute(db)),
      ),
    )
    expect(error.code).toBe('DEADLINE_EXCEEDED')
    const [line] = logged('query deadline exceeded')
    expect(line).toMatchObject({
      level: 40,
      domain: 'payment',
      criticality: 'critical',
      outcome: 'deadline_exceeded',
      phase: 'running',
      traceId: TRACE_ID,
      spanId: SPAN_ID,
    })
    expect(typeof line?.['queryId']).toBe('string')
    expect(typeof line?.['pid']).toBe('number')
    expect(line?.['budgetMs']).toBeGreaterThan(0)
    // Part of the 150 ms: how much depends on how long connecting took on a busy machine, so no lower bound.
    expect(line?.['ranMs']).toBeGreaterThan(0)
    expect(typeof line?.['waitedMs']).toBe('number')
    expect(String(line?.['sql'])).toContain('$1::text as log_deadline')
    await waitFor('the cancel log line', async () => logged('cancel confirmed').length === 1)
    expect(logged('cancel confirmed')[0]).toMatchObject({ level: 20, reason: 'deadline', method: 'backend', confirmed: true })
  })

  it('logs slow queries and sheds, with their SQL state and reason', async () => {
    await sql`select pg_sleep(0.15), ${SECRET}::text as slow_one`.execute(db)
    expect(logged('slow query')[0]).toMatchObject({ level: 40, outcome: 'ok', criticality: 'critical' })
    const holder = sql`select pg_sleep(0.4) as log_holder`.execute(db)
    await waitFor('the holder to run', async () => (await activeWithTag(database, 'log_holder')).length === 1)
    expect((await rejectionOf(withQueryContext({ criticality: 'sheddable' }, () => sql`select ${SECRET}::text`.execute(db)))).code).toBe('LOAD_SHED')
    await holder
    expect(logged('query shed')[0]).toMatchObject({ level: 40, criticality: 'sheddable', reason: 'utilisation' })
  })

  it('never writes a parameter value into any line', () => {
    expect(lines.length).toBeGreaterThan(3)
    for (const line of lines) expect(JSON.stringify(line)).not.toContain(SECRET)
  })

  it('tags statements with a sqlcommenter comment that pg_stat_activity shows', async () => {
    const running = inSpan(() => withQueryContext({ domain: 'payment' }, () => sql`select pg_sleep(0.5) as commented`.execute(db)))
    const [row] = await waitFor('the commented query', async () => {
      const rows = await database.admin<{ query: string }>(`select query from pg_stat_activity where state = 'active' and query like '%as commented%' and pid <> pg_backend_pid()`)
      return rows.length > 0 && rows
    })
    expect(row?.query).toBe(`/*criticality='critical',domain='payment',traceparent='00-${TRACE_ID}-${SPAN_ID}-01'*/ select pg_sleep(0.5) as commented`)
    await running
  })

  it('logs one error when the circuit opens, not one per failed probe', () => {
    for (const state of ['open', 'half_open', 'open', 'half_open', 'open', 'half_open', 'closed'] as const) dialect.events.emit('circuit', state)
    expect(logged('circuit opened: connections are failing, queries are shed').map((line) => line['level'])).toEqual([50])
    expect(logged('circuit half open: probing')).toHaveLength(3)
    expect(logged('circuit probe failed: still open')).toHaveLength(2)
    expect(logged('circuit closed')).toHaveLength(1)
  })

  it('refuses a logger without the pino methods', () => {
    expect(() => governed(database, {}, { logger: { info() {} } as never })).toThrow(expect.objectContaining({ code: 'INVALID_OPTION', option: 'logger' }))
    void dialect
  })
})
