import { sql, type Transaction } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Registry } from 'prom-client'
import { attemptsOf, retryTransaction, withQueryContext, type RetryEvent } from '../../src/index.js'
import { METRIC_NAMES, registerPrometheusMetrics } from '../../src/telemetry/prometheus-metrics.js'
import { governed, rejectionOf, sleep } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()
const { db, dialect } = governed(database, { max: 4 })
const events: RetryEvent[] = []
dialect.events.on('retry', (event) => events.push(event))
const registry = new Registry()
registerPrometheusMetrics(dialect, { registry, poolName: 'trx' })
afterAll(() => db.destroy())

beforeAll(async () => {
  await database.admin('create table counter (id int primary key, n int not null)')
  await database.admin('create table ledger (id serial primary key, note text not null)')
})

async function retriesCounted(reason: string, outcome: string): Promise<number> {
  const values = (await registry.getMetricsAsJSON()).find((m) => m.name === METRIC_NAMES.retries)?.values ?? []
  return Number(values.find((v) => v.labels['reason'] === reason && v.labels['outcome'] === outcome)?.value ?? 0)
}

/** Resolves once `count` parties have arrived (a one-shot barrier). */
function barrier(count: number): () => Promise<void> {
  let arrived = 0
  let open!: () => void
  const opened = new Promise<void>((resolve) => (open = resolve))
  return () => {
    if (++arrived === count) open()
    return opened
  }
}

describe('retryTransaction: a whole transaction re-run on 40001/40P01 within the deadline', () => {
  it('two conflicting serializable transactions both commit: the loser is re-run from its start', async () => {
    await database.admin('delete from counter; insert into counter values (1, 0)')
    const bothRead = barrier(2)
    const runs = { a: 0, b: 0 }
    const retries: string[] = []
    const increment = (name: 'a' | 'b') => async (trx: Transaction<any>) => {
      const first = ++runs[name] === 1
      const { n } = (await sql<{ n: number }>`select n from counter where id = 1`.execute(trx)).rows[0] as { n: number }
      // On the first run both read before either writes: one of them must lose (40001).
      if (first) await bothRead()
      await sql`update counter set n = ${n + 1} where id = 1`.execute(trx)
      return n + 1
    }
    const results = await withQueryContext({ timeoutMs: 10_000 }, () =>
      Promise.all([
        retryTransaction(db, increment('a'), { onRetry: (r) => retries.push(`${r.reason}#${r.attempt}`) }),
        retryTransaction(db, increment('b'), { onRetry: (r) => retries.push(`${r.reason}#${r.attempt}`) }),
      ]),
    )
    const n = (await database.admin<{ n: number }>('select n from counter where id = 1'))[0]?.n
    console.log(`[retry-transaction] results ${results.join(', ')}, runs a=${runs.a} b=${runs.b}, retries ${retries.join(', ')}, final n=${n}`)
    expect(n).toBe(2)
    expect(results.sort()).toEqual([1, 2])
    expect(runs.a + runs.b).toBe(3)
    expect(retries).toEqual(['serialization_failure#1'])
  })

  it('a transaction retry is a `retry` event of the pool and counts in pg_governor_retries_total, like the pool\'s own retries', async () => {
    await database.admin('delete from counter; insert into counter values (1, 0)')
    events.length = 0
    const bothRead = barrier(2)
    const runs = { a: 0, b: 0 }
    const increment = (name: 'a' | 'b') => async (trx: Transaction<any>) => {
      const first = ++runs[name] === 1
      const { n } = (await sql<{ n: number }>`select n from counter where id = 1`.execute(trx)).rows[0] as { n: number }
      if (first) await bothRead()
      await sql`update counter set n = ${n + 1} where id = 1`.execute(trx)
    }
    const before = await retriesCounted('serialization_failure', 'retried')
    await withQueryContext({ timeoutMs: 10_000 }, () => Promise.all([retryTransaction(db, increment('a')), retryTransaction(db, increment('b'))]))
    expect(events.map((e) => `${e.reason}/${e.outcome}#${e.attempt}`)).toEqual(['serialization_failure/retried#1'])
    expect(events[0]?.delayMs).toBeGreaterThanOrEqual(0)
    expect((await retriesCounted('serialization_failure', 'retried')) - before).toBe(1)
  })

  it('without retries, the same conflict fails one of them with 40001 and attempts = 1', async () => {
    await database.admin('delete from counter; insert into counter values (1, 0)')
    const bothRead = barrier(2)
    const increment = async (trx: Transaction<any>) => {
      const { n } = (await sql<{ n: number }>`select n from counter where id = 1`.execute(trx)).rows[0] as { n: number }
      await bothRead()
      await sql`update counter set n = ${n + 1} where id = 1`.execute(trx)
    }
    const outcomes = await Promise.allSettled([retryTransaction(db, increment, { maxAttempts: 1 }), retryTransaction(db, increment, { maxAttempts: 1 })])
    const failed = outcomes.filter((o): o is PromiseRejectedResult => o.status === 'rejected')
    expect(failed).toHaveLength(1)
    expect((failed[0]?.reason as { code?: string }).code).toBe('40001')
    expect(attemptsOf(failed[0]?.reason)).toBe(1)
  })

  it('never re-sends a write whose connection broke: the error is thrown after one run', async () => {
    let runs = 0
    const error = await rejectionOf(
      retryTransaction(db, async (trx) => {
        runs++
        await sql`insert into ledger (note) values ('once')`.execute(trx)
        const { pid } = (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx)).rows[0] as { pid: number }
        await database.admin('select pg_terminate_backend($1)', [pid])
        await sleep(50)
        await sql`select 1`.execute(trx)
      }),
    )
    console.log(`[retry-transaction] broken connection: ${String((error as Error).message)}, attempts ${attemptsOf(error)}`)
    expect(runs).toBe(1)
    expect(attemptsOf(error)).toBe(1)
    const count = (await database.admin<{ count: string }>('select count(*) from ledger'))[0]?.count
    expect(Number(count)).toBe(0)
  })

  it('a retry never starts after the deadline: with 40001 on every run, it stops before the deadline with the last error', async () => {
    // A db of its own: the retry budget is per db handle, and the tests above spent some of this file's.
    const own = governed(database, { max: 2 })
    let runs = 0
    const started = performance.now()
    const error = await rejectionOf(
      retryTransaction(
        own.db,
        async () => {
          runs++
          throw Object.assign(new Error('could not serialize access'), { code: '40001' })
        },
        { timeoutMs: 300, maxAttempts: 1_000, backoff: { baseMs: 50, maxMs: 100 }, budget: { maxTokens: 1_000 } },
      ),
    )
    const elapsed = performance.now() - started
    await own.db.destroy()
    console.log(`[retry-transaction] deadline 300 ms: ${runs} runs, gave up after ${elapsed.toFixed(0)} ms with ${(error as { code?: string }).code}`)
    expect((error as { code?: string }).code).toBe('40001')
    expect(attemptsOf(error)).toBe(runs)
    expect(runs).toBeGreaterThan(1)
    expect(elapsed).toBeLessThan(300 + 200)
  })
})
