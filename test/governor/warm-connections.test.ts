import { Kysely, sql } from 'kysely'
import { afterEach, describe, expect, it } from 'vitest'
import { GovernedPostgresDialect, InvalidOptionError } from '../../src/index.js'
import { governed, rejectionOf, sleep, waitFor, type GovernedSetup } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()
const setups: GovernedSetup[] = []
afterEach(async () => {
  await Promise.all(setups.splice(0).map((setup) => setup.db.destroy()))
})

/** A governed setup whose pg-pool check-outs and check-ins are counted. */
function counted(...args: Parameters<typeof governed>): GovernedSetup & { readonly lent: () => number; readonly returned: () => number } {
  const setup = governed(...args)
  setups.push(setup)
  let lent = 0
  let returned = 0
  setup.pool.on('acquire', () => lent++)
  setup.pool.on('release', () => returned++)
  return { ...setup, lent: () => lent, returned: () => returned }
}

async function pidOf(db: Kysely<any>): Promise<number> {
  const { rows } = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(db)
  return rows[0]?.pid as number
}

describe('warm connections: released connections kept for the next query', () => {
  it('serves back-to-back queries from one pg-pool check-out, on the same backend', async () => {
    const { db, dialect, pool, lent } = counted(database, { max: 4 })
    const pids = new Set<number>()
    for (let i = 0; i < 50; i++) pids.add(await pidOf(db))
    expect(pids.size).toBe(1)
    expect(lent()).toBe(1)
    // Between queries the connection is idle as far as the dialect is concerned, checked out as far as pg-pool is.
    expect(dialect.poolStats()).toMatchObject({ total: 1, idle: 1, warm: 1, used: 0, permits: 0 })
    expect({ total: pool.totalCount, idle: pool.idleCount }).toEqual({ total: 1, idle: 0 })
  })

  it('hands kept connections back to pg-pool once no query took them for idleMs', async () => {
    const { db, dialect, pool, returned } = counted(database, { max: 4 }, { warmConnections: { idleMs: 50 } })
    await Promise.all([1, 2, 3].map(() => sql`select pg_sleep(0.02)`.execute(db)))
    expect(dialect.poolStats().warm).toBe(3)
    expect(returned()).toBe(0)
    await waitFor('pg-pool to have its clients back', async () => pool.idleCount === 3)
    expect(dialect.poolStats()).toMatchObject({ total: 3, idle: 3, warm: 0 })
    expect(returned()).toBe(3)
  })

  it('returns a connection to pg-pool at its first release after leaseMs, however busy it is', async () => {
    const { db, dialect, lent, returned } = counted(database, { max: 1 }, { warmConnections: { idleMs: 10_000, leaseMs: 40 } })
    const until = performance.now() + 300
    let queries = 0
    while (performance.now() < until) {
      await sql`select 1`.execute(db)
      queries++
    }
    // About one check-out per 40 ms lease, not one per query and not one in all.
    expect(lent()).toBeGreaterThanOrEqual(4)
    expect(lent()).toBeLessThan(queries / 2)
    // Every check-out but the one still kept went back; the last release may itself have been past its lease.
    expect(returned()).toBe(lent() - dialect.poolStats().warm)
  })

  it('passes a released connection to a caller queued for a permit without going through pg-pool', async () => {
    const { db, lent } = counted(database, { max: 1 })
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => sql<{ n: number }>`select ${i}::int as n`.execute(db)))
    expect(results.map((result) => result.rows[0]?.n)).toEqual(Array.from({ length: 20 }, (_, i) => i))
    expect(lent()).toBe(1)
  })

  it('drops a kept connection whose backend is killed, reports it as a pool error, and serves the next query', async () => {
    const { db, dialect, pool } = counted(database, { max: 2, application_name: 'warm-kill' })
    const poolErrors: Error[] = []
    dialect.events.on('poolError', (error) => poolErrors.push(error))
    const pid = await pidOf(db)
    expect(dialect.poolStats().warm).toBe(1)
    await database.admin('select pg_terminate_backend($1)', [pid])
    await waitFor('the killed connection to leave the pool', async () => pool.totalCount === 0)
    expect(dialect.poolStats()).toMatchObject({ total: 0, warm: 0, permits: 0 })
    expect(poolErrors).toHaveLength(1)
    expect(await pidOf(db)).not.toBe(pid)
  })

  it('keeps no connection that was released inside a transaction or discarded', async () => {
    const { db, dialect, pool } = counted(database, { max: 2 })
    // Released with a transaction open: rolled back and handed to pg-pool, not kept.
    await db.connection().execute(async (connection) => {
      await sql`begin`.execute(connection)
      await sql`select 1`.execute(connection)
    })
    await waitFor('the rolled-back connection to reach pg-pool', async () => pool.idleCount === 1)
    expect(dialect.poolStats()).toMatchObject({ total: 1, idle: 1, warm: 0 })
    // Discarded (its backend killed while pinned): destroyed, not kept.
    const pinned = db.connection().execute(async (connection) => {
      await database.admin('select pg_terminate_backend($1)', [await pidOf(connection)])
      await sleep(50)
      return rejectionOf(sql`select 1`.execute(connection))
    })
    expect((await pinned).message).toMatch(/terminat|Connection|discarded/i)
    await waitFor('the discarded connection to leave the pool', async () => pool.totalCount === 0)
    expect(dialect.poolStats()).toMatchObject({ total: 0, warm: 0, permits: 0 })
  })

  it('hands every kept connection back before ending the pool on destroy', async () => {
    const setup = governed(database, { max: 3 }, { warmConnections: { idleMs: 60_000, leaseMs: 60_000 } })
    await Promise.all([1, 2, 3].map(() => sql`select pg_sleep(0.01)`.execute(setup.db)))
    expect(setup.dialect.poolStats().warm).toBe(3)
    await setup.db.destroy()
    expect(setup.pool.ended).toBe(true)
    expect(setup.pool.totalCount).toBe(0)
  })

  it('tryAcquire hands out a kept session with a free permit at once, and takes nothing when it cannot', async () => {
    const driver = governed(database, { max: 1 }).dialect.createDriver()
    await driver.init()
    const governor = driver.governor as NonNullable<typeof driver.governor>
    // Nothing kept yet: nothing is taken, and acquire() is the way on.
    expect(governor.tryAcquire()).toBeUndefined()
    expect(governor.stats()).toMatchObject({ warm: 0, permits: 0 })
    ;(await governor.acquire()).release()
    expect(governor.stats()).toMatchObject({ warm: 1, permits: 0 })
    const lease = governor.tryAcquire()
    expect(lease?.session.pid).toBeTypeOf('number')
    expect(governor.stats()).toMatchObject({ warm: 0, permits: 1 })
    expect(governor.tryAcquire()).toBeUndefined()
    expect(governor.stats()).toMatchObject({ warm: 0, permits: 1 })
    lease?.release()
    expect(governor.stats()).toMatchObject({ warm: 1, permits: 0 })
    await driver.destroy()
    expect(governor.tryAcquire()).toBeUndefined()
  })

  it('goes through pg-pool for every query when turned off, or when the pool sets maxUses', async () => {
    const off = counted(database, { max: 2 }, { warmConnections: false })
    const maxUses = counted(database, { max: 2, maxUses: 1_000 })
    for (let i = 0; i < 10; i++) {
      await sql`select 1`.execute(off.db)
      await sql`select 1`.execute(maxUses.db)
    }
    expect(off.lent()).toBe(10)
    expect(maxUses.lent()).toBe(10)
    expect(off.dialect.poolStats().warm).toBe(0)
    expect(maxUses.pool.idleCount).toBe(maxUses.pool.totalCount)
  })

  it('refuses malformed options at construction with a typed error', () => {
    const pool = database.pool({ max: 1 })
    const bad: unknown[] = ['yes', null, 0, { idleMs: -1 }, { idleMs: 0 }, { leaseMs: Number.NaN }, { leaseMs: 0.5 }, { idleMs: '100' }, { leaseMs: 2 ** 31 }]
    for (const warmConnections of bad) {
      expect(() => new GovernedPostgresDialect({ pool, warmConnections } as never), JSON.stringify(warmConnections)).toThrow(InvalidOptionError)
    }
    expect(() => new GovernedPostgresDialect({ pool, warmConnections: { idleMs: 1, leaseMs: 1 } })).not.toThrow()
    void pool.end()
  })
})
