import { sql } from 'kysely'
import { afterAll, describe, expect, it } from 'vitest'
import { LoadShedError, withQueryContext, type Criticality, type ShedEvent } from '../../src/index.js'
import { CONFIDENT_AFTER } from '../../src/admission/load-estimator.js'
import { governed, rejectionOf, sleep, waitFor, type GovernedSetup } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()
const setups: GovernedSetup[] = []
afterAll(() => Promise.all(setups.map((setup) => setup.db.destroy())))

function setup(...args: Parameters<typeof governed> extends [unknown, ...infer Rest] ? Rest : never): GovernedSetup {
  const made = governed(database, ...args)
  setups.push(made)
  return made
}

/** Holds `count` connections with pg_sleep until `release` resolves them. */
async function hold(made: GovernedSetup, count: number, seconds = 1): Promise<Promise<unknown>[]> {
  const holders = Array.from({ length: count }, () =>
    withQueryContext({ criticality: 'critical_plus' }, () => sql`select pg_sleep(${seconds})`.execute(made.db)),
  )
  await waitFor(`${count} connections in use`, async () => made.dialect.poolStats().used === count)
  return holders
}

function run(made: GovernedSetup, criticality: Criticality, timeoutMs = 10_000): Promise<unknown> {
  return withQueryContext({ criticality, timeoutMs }, () => sql`select 1`.execute(made.db))
}

describe('priority order under contention', () => {
  it('serves the most critical waiter first, then the earliest deadline', async () => {
    const made = setup({ max: 1 }, { admission: { utilisationThresholds: { sheddable: null, sheddable_plus: null, critical: null }, feasibility: false } })
    const holders = await hold(made, 1, 0.3)
    const order: string[] = []
    const waiters = [
      ['sheddable', 10_000],
      ['critical', 9_000],
      ['sheddable_plus', 10_000],
      ['critical_plus', 10_000],
      ['critical', 8_000],
      ['sheddable', 5_000],
    ].map(([criticality, timeoutMs], index) =>
      withQueryContext({ criticality: criticality as Criticality, timeoutMs: timeoutMs as number }, async () => {
        await sql`select 1`.execute(made.db)
        order.push(`${criticality}@${timeoutMs}#${index}`)
      }),
    )
    await waitFor('all six to queue', async () => made.dialect.poolStats().waiting === 6)
    await Promise.all([...holders, ...waiters])
    expect(order).toEqual([
      'critical_plus@10000#3',
      'critical@8000#4',
      'critical@9000#1',
      'sheddable_plus@10000#2',
      'sheddable@5000#5',
      'sheddable@10000#0',
    ])
  })
})

describe('shedding thresholds (defaults: sheddable 0.8, sheddable_plus 0.9, critical by deadline only)', () => {
  it('refuses each level exactly at its threshold, and the lower levels first', async () => {
    const made = setup({ max: 10 }, { admission: { feasibility: false } })
    const sheds: ShedEvent[] = []
    made.dialect.events.on('shed', (event) => sheds.push(event))

    const seven = await hold(made, 7)
    // 7/10 = 0.7: every level is admitted.
    await expect(run(made, 'sheddable')).resolves.toBeDefined()
    expect(made.dialect.poolStats().sheddingLevel).toBeUndefined()

    const eighth = await holdMore(made, 1, 8)
    // 8/10 = 0.8: sheddable is refused, sheddable_plus is not.
    const refused = await rejectionOf(run(made, 'sheddable'))
    expect(refused).toBeInstanceOf(LoadShedError)
    expect(refused).toMatchObject({ code: 'LOAD_SHED', criticality: 'sheddable', reason: 'utilisation' })
    expect(refused.retryAfterMs).toBeGreaterThanOrEqual(50)
    await expect(run(made, 'sheddable_plus')).resolves.toBeDefined()
    expect(made.dialect.poolStats().sheddingLevel).toBe('sheddable')

    const ninth = await holdMore(made, 1, 9)
    // 9/10 = 0.9: sheddable_plus is refused too; critical still runs.
    expect(await rejectionOf(run(made, 'sheddable_plus'))).toMatchObject({ reason: 'utilisation', criticality: 'sheddable_plus' })
    expect(await rejectionOf(run(made, 'sheddable'))).toMatchObject({ reason: 'utilisation' })
    await expect(run(made, 'critical')).resolves.toBeDefined()
    expect(made.dialect.poolStats().sheddingLevel).toBe('sheddable_plus')

    expect(sheds.map((event) => `${event.criticality}:${event.reason}`)).toEqual([
      'sheddable:utilisation',
      'sheddable_plus:utilisation',
      'sheddable:utilisation',
    ])
    await Promise.all([...seven, ...eighth, ...ninth])
  })

  it('sheds nothing while the pool is healthy', async () => {
    const made = setup({ max: 10 })
    const sheds: ShedEvent[] = []
    made.dialect.events.on('shed', (event) => sheds.push(event))
    const levels: Criticality[] = ['critical_plus', 'critical', 'sheddable_plus', 'sheddable']
    // Six workers on ten connections: utilisation stays at or below 0.6.
    await Promise.all(
      Array.from({ length: 6 }, async (_, worker) => {
        for (let i = 0; i < 80; i++) {
          await withQueryContext({ criticality: levels[(worker + i) % 4], timeoutMs: 2_000 }, () => sql`select pg_sleep(0.001)`.execute(made.db))
        }
      }),
    )
    expect(sheds).toEqual([])
  })

  it('follows policy changes made at runtime', async () => {
    const made = setup({ max: 10 }, { policies: { report: { criticality: 'critical' } }, admission: { feasibility: false } })
    const holders = await hold(made, 8)
    await expect(withQueryContext({ domain: 'report' }, () => sql`select 1`.execute(made.db))).resolves.toBeDefined()
    made.dialect.policies.set('report', { criticality: 'sheddable' })
    expect(await rejectionOf(withQueryContext({ domain: 'report' }, () => sql`select 1`.execute(made.db)))).toMatchObject({
      code: 'LOAD_SHED',
      criticality: 'sheddable',
    })
    // An explicit criticality in the context wins over the domain's.
    await expect(withQueryContext({ domain: 'report', criticality: 'critical' }, () => sql`select 1`.execute(made.db))).resolves.toBeDefined()
    await Promise.all(holders)
  })
})

describe('deadline feasibility', () => {
  it('refuses at once a critical query whose predicted wait and run exceed its budget; critical_plus still waits', async () => {
    const made = setup({ max: 2 })
    // Teach the estimator that a connection is held about 200 ms: it judges feasibility from CONFIDENT_AFTER samples on.
    for (let i = 0; i < CONFIDENT_AFTER / 2; i++) await Promise.all([1, 2].map(() => sql`select pg_sleep(0.2)`.execute(made.db)))
    expect(made.dialect.poolStats().meanUseMs).toBeGreaterThan(150)
    const holders = await hold(made, 2, 0.5)
    const started = performance.now()
    const refused = await rejectionOf(run(made, 'critical', 150))
    expect(refused).toMatchObject({ code: 'LOAD_SHED', reason: 'deadline', criticality: 'critical' })
    expect(refused.retryAfterMs).toBeGreaterThan(150)
    // Refused without waiting for its budget to run out (a behaviour, not a timing claim: the budget is 150 ms).
    expect(performance.now() - started).toBeLessThan(150)
    // critical_plus is never shed: it waits, and its deadline alone applies.
    const plus = await rejectionOf(run(made, 'critical_plus', 100))
    expect(plus.code).toBe('DEADLINE_EXCEEDED')
    expect(plus.phase).toBe('waiting')
    // With a budget that fits, critical queues and runs.
    await expect(run(made, 'critical', 5_000)).resolves.toBeDefined()
    await Promise.all(holders)
  })
})

describe('reserve', () => {
  it('keeps the last connections for critical work', async () => {
    const made = setup(
      { max: 4 },
      { admission: { reserve: 1, utilisationThresholds: { sheddable: null, sheddable_plus: null, critical: null }, feasibility: false } },
    )
    const holders = await hold(made, 3, 0.4)
    const sheddable = run(made, 'sheddable')
    await waitFor('the sheddable query to queue behind the reserve', async () => made.dialect.poolStats().waiting === 1)
    // The reserved fourth connection goes to critical work at once.
    await expect(run(made, 'critical')).resolves.toBeDefined()
    expect(made.dialect.poolStats().waiting).toBe(1)
    await Promise.all(holders)
    await expect(sheddable).resolves.toBeDefined()
  })

  it('refuses, at construction, a reserve that leaves nothing for the rest', () => {
    expect(() => setup({ max: 2 }, { admission: { reserve: 2 } })).toThrow(expect.objectContaining({ code: 'INVALID_OPTION', option: 'admission.reserve' }))
  })
})

describe('bounded queue', () => {
  it('sheds with reason queue once maxWaiting callers wait', async () => {
    const made = setup({ max: 1 }, { admission: { maxWaiting: 2, utilisationThresholds: { sheddable: null, sheddable_plus: null, critical: null }, feasibility: false } })
    const holders = await hold(made, 1, 0.3)
    const waiters = [run(made, 'critical'), run(made, 'critical')]
    await waitFor('two waiters', async () => made.dialect.poolStats().waiting === 2)
    expect(await rejectionOf(run(made, 'critical'))).toMatchObject({ code: 'LOAD_SHED', reason: 'queue' })
    await Promise.all([...holders, ...waiters])
    await sleep(0)
  })
})

async function holdMore(made: GovernedSetup, count: number, total: number): Promise<Promise<unknown>[]> {
  const holders = Array.from({ length: count }, () =>
    withQueryContext({ criticality: 'critical_plus' }, () => sql`select pg_sleep(1)`.execute(made.db)),
  )
  await waitFor(`${total} connections in use`, async () => made.dialect.poolStats().used === total)
  return holders
}

describe('destroy', () => {
  it('rejects the callers still waiting with POOL_CLOSED', async () => {
    const made = governed(database, { max: 1 }, { admission: { feasibility: false } })
    const holders = await hold(made, 1, 0.3)
    const waiter = run(made, 'critical')
    await waitFor('the waiter to queue', async () => made.dialect.poolStats().waiting === 1)
    const destroyed = made.db.destroy()
    expect(await rejectionOf(waiter)).toMatchObject({ code: 'POOL_CLOSED' })
    await Promise.allSettled(holders)
    await destroyed
  })
})
