import { Kysely, sql } from 'kysely'
import pg from 'pg'
import { describe, expect, it } from 'vitest'
import {
  GovernedPostgresDialect,
  LoadShedError,
  withQueryContext,
  type CapacityEvent,
  type CircuitState,
  type Criticality,
  type GovernorLogger,
  type ServerLimitsEvent,
} from '../../src/index.js'
import { sleep, waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'
import { sessionsOf, useLimitedRole } from './support.js'

const database = useTestDatabase()
// Four sessions for the role: the control connection takes one, the pool (max 8) can reach three.
const full = useLimitedRole(database, 4)
const sizing = useLimitedRole(database, 7)
const shared = useLimitedRole(database, 8)

interface Outcome {
  readonly criticality: Criticality
  readonly ok: boolean
  readonly error: unknown
}

function run(db: Kysely<any>, criticality: Criticality, timeoutMs: number, sleepS: number): Promise<Outcome> {
  return withQueryContext({ timeoutMs, criticality }, () => sql`select pg_sleep(${sleepS})`.execute(db)).then(
    () => ({ criticality, ok: true, error: undefined }),
    (error: unknown) => ({ criticality, ok: false, error }),
  )
}

function controlOpen(role: string): () => Promise<boolean> {
  return async () => {
    const rows = await database.admin(`select 1 from pg_stat_activity where usename = $1 and application_name like '%(pg-governor control)'`, [role])
    return rows.length === 1
  }
}

describe('a full server is not a failing server', () => {
  it('53300 never opens the breaker; a pool that can reach only 3 of its 8 serves all its critical work from them', async () => {
    const pool = new pg.Pool({ connectionString: full.url(), max: 8, application_name: 'fleet_full' })
    // A breaker that opens at the first connection failure: a 53300 counted as one would open it. Without
    // the sizing check (it would cap the pool at its fair share of 3 before any refusal), the ceiling is
    // learned from the server's refusals alone.
    const dialect = new GovernedPostgresDialect({ pool, circuitBreaker: { failureThreshold: 1 }, fleet: { checkServerLimits: false } })
    const db = new Kysely<any>({ dialect })
    const circuit: CircuitState[] = []
    const capacity: CapacityEvent[] = []
    dialect.events.on('circuit', (state) => circuit.push(state))
    dialect.events.on('capacity', (event) => capacity.push(event))
    try {
      await sql`select 1`.execute(db)
      await waitFor('the control connection', controlOpen(full.name))
      const work = [
        ...Array.from({ length: 30 }, () => run(db, 'critical', 10_000, 0.05)),
        ...Array.from({ length: 10 }, () => run(db, 'sheddable', 10_000, 0.05)),
      ]
      const outcomes = await Promise.all(work)
      const critical = outcomes.filter((o) => o.criticality === 'critical')
      const errors = outcomes.filter((o) => !o.ok).map((o) => o.error as { code?: string })
      console.log(
        `[full-server] critical ${critical.filter((o) => o.ok).length}/${critical.length} ok; sheddable ${outcomes.filter((o) => o.criticality === 'sheddable' && o.ok).length}/10 ok; ` +
          `capacity events ${capacity.map((e) => `${e.change}->${e.ceiling}`).join(' ')}; circuit ${circuit.join(',') || 'never changed'}`,
      )
      expect(critical.every((o) => o.ok)).toBe(true)
      // Whatever was refused was refused by admission, never with the server's 53300.
      for (const error of errors) expect(error).toBeInstanceOf(LoadShedError)
      expect(errors.some((e) => e.code === '53300')).toBe(false)
      expect(circuit).toEqual([])
      expect(capacity.some((e) => e.change === 'refused' && e.error !== undefined && (e.error as { code?: string }).code === '53300')).toBe(true)
      const stats = dialect.poolStats()
      expect(stats).toMatchObject({ max: 8, ceiling: 3, circuit: 'closed' })
      expect(await sessionsOf(database, full.name)).toBeLessThanOrEqual(4)
    } finally {
      await db.destroy()
    }
  })

  it('idle slots move to the busy pool: a pool that starts with none serves its critical work once the other goes idle', async () => {
    // Two instances of max 6 on a role with 8 sessions: two control connections leave 6 for both pools.
    const make = (name: string) => {
      const pool = new pg.Pool({ connectionString: shared.url(), max: 6, idleTimeoutMillis: 300, application_name: name })
      const dialect = new GovernedPostgresDialect({ pool })
      return { dialect, db: new Kysely<any>({ dialect }) }
    }
    const a = make('fleet_a')
    const b = make('fleet_b')
    try {
      await sql`select 1`.execute(a.db)
      await sql`select 1`.execute(b.db)
      await waitFor('both control connections', async () => (await database.admin(`select 1 from pg_stat_activity where usename = $1 and application_name like '%(pg-governor control)'`, [shared.name])).length === 2)
      // B's first connection goes back (pg-pool's idleTimeoutMillis); then A takes every slot left with a burst of six.
      await waitFor('B to hold nothing', async () => b.dialect.poolStats().total === 0)
      const burst = await Promise.all(Array.from({ length: 6 }, () => run(a.db, 'critical', 5_000, 0.3)))
      expect(burst.every((o) => o.ok)).toBe(true)
      const heldByA = a.dialect.poolStats().total
      // Now A's load is light (one at a time) and B's is heavy (four at a time), all critical, 4 s deadlines.
      const started = performance.now()
      const aWork = (async () => {
        const out: Outcome[] = []
        while (performance.now() - started < 2_500) out.push(await run(a.db, 'critical', 4_000, 0.05))
        return out
      })()
      const bWork = Promise.all(
        Array.from({ length: 4 }, async () => {
          const out: Outcome[] = []
          while (performance.now() - started < 2_500) out.push(await run(b.db, 'critical', 4_000, 0.05))
          return out
        }),
      ).then((lists) => lists.flat())
      const [aOut, bOut] = await Promise.all([aWork, bWork])
      const bStats = b.dialect.poolStats()
      console.log(
        `[idle slots move] A held ${heldByA} after its burst, ${a.dialect.poolStats().total} at the end (${aOut.filter((o) => o.ok).length}/${aOut.length} ok); ` +
          `B ceiling ${bStats.ceiling}, held ${bStats.total}, permits ${bStats.permits}, waiting ${bStats.waiting} (${bOut.filter((o) => o.ok).length}/${bOut.length} ok` +
          `${bOut.find((o) => o.error)?.error ? `; first error: ${String(bOut.find((o) => o.error)?.error)}` : ''})`,
      )
      expect(heldByA).toBe(6)
      expect(aOut.every((o) => o.ok)).toBe(true)
      expect(bOut.length).toBeGreaterThan(8)
      for (const o of bOut) expect(o.error).toBeUndefined()
      // B's work came from slots A gave back.
      expect(bStats.total).toBeGreaterThanOrEqual(3)
    } finally {
      await a.db.destroy()
      await b.db.destroy()
    }
  })
})

describe('the sizing check at start', () => {
  it('keeps a pool that does not fit to its fair share from the start: no session is refused', async () => {
    const pool = new pg.Pool({ connectionString: full.url(), max: 8, application_name: 'fleet_fair' })
    const dialect = new GovernedPostgresDialect({ pool })
    const capacity: CapacityEvent[] = []
    dialect.events.on('capacity', (event) => capacity.push(event))
    const limits: ServerLimitsEvent[] = []
    dialect.events.on('serverLimits', (event) => limits.push(event))
    const db = new Kysely<any>({ dialect })
    try {
      await sql`select 1`.execute(db)
      await waitFor('the limits', async () => limits.length === 1)
      expect(limits[0]).toMatchObject({ usableSlots: 4, needed: 9, fits: false, suggestedPoolMax: 3 })
      const outcomes = await Promise.all(Array.from({ length: 20 }, () => run(db, 'critical', 10_000, 0.05)))
      expect(outcomes.every((o) => o.ok)).toBe(true)
      expect(dialect.poolStats()).toMatchObject({ ceiling: 3, total: 3 })
      expect(capacity.filter((e) => e.change === 'refused')).toEqual([])
    } finally {
      await db.destroy()
    }
  })

  it('reads the server\'s limits once and warns with the figures when max x expected instances cannot fit', async () => {
    const pool = new pg.Pool({ connectionString: sizing.url(), max: 4 })
    const warnings: { fields: object; message: string }[] = []
    const noop = (): void => {}
    const logger: GovernorLogger = { debug: noop, info: noop, error: noop, warn: (fields, message) => warnings.push({ fields, message }) }
    const dialect = new GovernedPostgresDialect({ pool, logger, fleet: { expectedInstances: 2 } })
    const limits: ServerLimitsEvent[] = []
    dialect.events.on('serverLimits', (event) => limits.push(event))
    const db = new Kysely<any>({ dialect })
    try {
      await sql`select 1`.execute(db)
      await waitFor('the limits', async () => limits.length === 1)
      const [settings] = await database.admin<{ max: number; su: number; reserved: number }>(
        `select current_setting('max_connections')::int as max, current_setting('superuser_reserved_connections')::int as su, coalesce(nullif(current_setting('reserved_connections', true), ''), '0')::int as reserved`,
      )
      expect(limits[0]).toEqual({
        maxConnections: settings?.max,
        superuserReservedConnections: settings?.su,
        reservedConnections: settings?.reserved,
        roleConnectionLimit: 7,
        databaseConnectionLimit: undefined,
        usableSlots: 7,
        limitedBy: 'role',
        poolMax: 4,
        expectedInstances: 2,
        needed: 10,
        fits: false,
        suggestedPoolMax: 2,
      })
      const warning = warnings.find((w) => /needs 10 connections/.test(w.message))
      expect(warning?.message).toBe('pool max 4 x 2 instances (+1 control connection each) needs 10 connections; the server has 7 for this role: set max to 2 or fewer')
      // Once: more queries do not read them again.
      await sql`select 1`.execute(db)
      await sleep(50)
      expect(limits).toHaveLength(1)
    } finally {
      await db.destroy()
    }
  })

  it('says it fits, without a warning, when it does', async () => {
    const pool = new pg.Pool({ connectionString: sizing.url(), max: 2 })
    const warnings: string[] = []
    const noop = (): void => {}
    const dialect = new GovernedPostgresDialect({ pool, logger: { debug: noop, info: noop, error: noop, warn: (_f, m) => warnings.push(m) }, fleet: { expectedInstances: 2 } })
    const limits: ServerLimitsEvent[] = []
    dialect.events.on('serverLimits', (event) => limits.push(event))
    const db = new Kysely<any>({ dialect })
    try {
      await sql`select 1`.execute(db)
      await waitFor('the limits', async () => limits.length === 1)
      expect(limits[0]).toMatchObject({ usableSlots: 7, needed: 6, fits: true })
      expect(warnings).toEqual([])
    } finally {
      await db.destroy()
    }
  })
})
