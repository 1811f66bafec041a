import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { attemptsOf, GovernedPostgresDialect, InvalidOptionError, withQueryContext, type RetryEvent } from '../../src/index.js'
import { pidOfRunning, sleep } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()

const dialect = new GovernedPostgresDialect({
  pool: database.pool({ max: 3 }),
  controlConnection: { eager: false },
  policies: { reports: { timeoutMs: 10_000, retry: { reads: true } }, strict: { retry: false } },
})
const events: RetryEvent[] = []
dialect.events.on('retry', (event) => events.push(event))
const db = new Kysely<any>({ dialect })
afterAll(() => db.destroy())

beforeAll(async () => {
  await database.admin('create table ledger (id serial primary key, note text not null)')
})

let seq = 0

/** Runs `query(tag)`, kills its backend once it runs (after it was sent), and settles into its result or error. */
async function killWhileRunning<T>(query: (tag: string) => Promise<T>): Promise<{ readonly killed: number; readonly outcome: T | Error }> {
  events.length = 0
  const tag = `read-retry-${++seq}-${Date.now()}`
  const running = query(tag).then(
    (value) => value,
    (error: unknown) => error as Error,
  )
  const killed = await pidOfRunning(database, tag)
  await database.admin('select pg_terminate_backend($1)', [killed])
  return { killed, outcome: await running }
}

const sleepyRead = (tag: string): Promise<{ pid: number }> =>
  sql<{ pid: number }>`select pg_backend_pid() as pid from pg_sleep(0.3) /* ${sql.raw(tag)} */`.execute(db).then((r) => r.rows[0] as { pid: number })

describe('opt-in retry of a read whose connection broke after it was sent (the caller says it is a read)', () => {
  it('with retry: { reads: true } on the context, the read runs again on another connection and succeeds', async () => {
    const { killed, outcome } = await killWhileRunning((tag) => withQueryContext({ timeoutMs: 5_000, retry: { reads: true } }, () => sleepyRead(tag)))
    console.log(`[read-retries] context opt-in: killed ${killed}, outcome ${JSON.stringify(outcome)}, retries ${JSON.stringify(events)}`)
    expect(outcome).not.toBeInstanceOf(Error)
    expect((outcome as { pid: number }).pid).not.toBe(killed)
    expect(events.map((e) => `${e.reason}/${e.outcome}#${e.attempt}`)).toEqual(['admin_shutdown/retried#1'])
  })

  it('with the policy of its domain saying so (policies.reports.retry.reads), the same', async () => {
    const { killed, outcome } = await killWhileRunning((tag) => withQueryContext({ domain: 'reports' }, () => sleepyRead(tag)))
    expect((outcome as { pid: number }).pid).not.toBe(killed)
    expect(events.map((e) => `${e.reason}/${e.outcome}`)).toEqual(['admin_shutdown/retried'])
  })

  it('a context can say no where its policy said yes (retry: false), and without anyone saying so a read is not retried', async () => {
    const refused = await killWhileRunning((tag) => withQueryContext({ domain: 'reports', retry: false }, () => sleepyRead(tag)))
    expect((refused.outcome as { code?: string }).code).toBe('57P01')
    expect(attemptsOf(refused.outcome)).toBe(1)
    const silent = await killWhileRunning((tag) => withQueryContext({ timeoutMs: 5_000 }, () => sleepyRead(tag)))
    expect((silent.outcome as { code?: string }).code).toBe('57P01')
    expect(attemptsOf(silent.outcome)).toBe(1)
    expect(events).toEqual([])
  })

  it('a write is never re-sent, even under reads: true: Kysely built it as an insert; the caller gets the error and no row is at the server', async () => {
    await database.admin('truncate ledger')
    const { outcome } = await killWhileRunning((tag) =>
      withQueryContext({ timeoutMs: 5_000, retry: { reads: true } }, () =>
        db
          .insertInto('ledger')
          .values({ note: sql<string>`(select ${tag}::text from pg_sleep(0.3) /* ${sql.raw(tag)} */)` })
          .execute(),
      ),
    )
    // Had it been sent again, its row would be there by now (the killed run was rolled back).
    await sleep(700)
    const rows = await database.admin<{ count: string }>('select count(*) from ledger')
    expect((outcome as { code?: string }).code).toBe('57P01')
    expect(attemptsOf(outcome)).toBe(1)
    expect(Number(rows[0]?.count)).toBe(0)
  })

  it('a read inside a transaction is never retried alone, even under reads: true', async () => {
    const { outcome } = await killWhileRunning((tag) =>
      withQueryContext({ timeoutMs: 5_000, retry: { reads: true } }, () => db.transaction().execute((trx) => sql`select pg_sleep(0.3) /* ${sql.raw(tag)} */`.execute(trx))),
    )
    expect(outcome).toBeInstanceOf(Error)
    expect(events).toEqual([])
  })

  it("a context's maxAttempts replaces the pool's: with 1, no retry; the caller gets the connection error and the event says why", async () => {
    const { outcome } = await killWhileRunning((tag) => withQueryContext({ timeoutMs: 5_000, retry: { reads: true, maxAttempts: 1 } }, () => sleepyRead(tag)))
    expect((outcome as { code?: string }).code).toBe('57P01')
    expect(attemptsOf(outcome)).toBe(1)
    expect(events.map((e) => `${e.reason}/${e.outcome}`)).toEqual(['admin_shutdown/attempts'])
  })
})

describe('per-context and per-policy retry options are validated with typed errors', () => {
  it('refuses a bad context option before the function runs', () => {
    let ran = false
    const run = (retry: unknown): unknown => withQueryContext({ retry: retry as never }, () => (ran = true))
    expect(() => run({ maxAttempts: 0 })).toThrow(InvalidOptionError)
    expect(() => run({ maxAttempts: 1.5 })).toThrow(/retry\.maxAttempts/)
    expect(() => run({ reads: 'yes' })).toThrow(/retry\.reads/)
    expect(() => run({ idempotent: true })).toThrow(/has no option idempotent/)
    expect(() => run(true)).toThrow(/must be an object or false/)
    expect(ran).toBe(false)
  })

  it('refuses a bad policy option, naming the domain', () => {
    expect(() => dialect.policies.set('bad', { retry: { maxAttempts: -1 } })).toThrow(/policies\.bad\.retry\.maxAttempts/)
    expect(() => new GovernedPostgresDialect({ pool: database.pool(), policies: { x: { retry: null as never } } })).toThrow(InvalidOptionError)
    expect(dialect.policies.has('bad')).toBe(false)
  })
})
