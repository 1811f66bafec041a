import { Kysely, sql } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { GovernedPostgresDialect, LoadShedError, withQueryContext, type Criticality, type SaturationEvent } from '../../src/index.js'
import { rejectionOf, waitFor } from '../support/governed.js'
import { startEmbeddedServer, type ControllableServer } from '../support/test-server.js'

// Saturation is counted server-wide, so this file cannot share the suite's
// server (the other files' backends would count) nor stand in a role limit
// for it (idle pool and control sessions hold a role's slots without being
// busy): a server of its own, with 20 connections and 2 reserved for superusers.
let server: ControllableServer
let appUrl: string
const MAX_CONNECTIONS = 20
const USABLE = MAX_CONNECTIONS - 2

beforeAll(async () => {
  server = await startEmbeddedServer(['-c', `max_connections=${MAX_CONNECTIONS}`, '-c', 'superuser_reserved_connections=2'])
  const admin = new pg.Client({ connectionString: server.url })
  await admin.connect()
  await admin.query(`create role app login password 'app'`)
  await admin.query('grant pg_read_all_stats to app')
  await admin.end()
  const url = new URL(server.url)
  url.username = 'app'
  url.password = 'app'
  appUrl = url.toString()
})
afterAll(async () => {
  await server?.destroy()
})

function instance(name: string) {
  const pool = new pg.Pool({ connectionString: appUrl, max: 3, application_name: name })
  const dialect = new GovernedPostgresDialect({ pool, fleet: { expectedInstances: 2, saturation: { intervalMs: 100 } } })
  const samples: SaturationEvent[] = []
  dialect.events.on('saturation', (event) => samples.push(event))
  return { dialect, samples, db: new Kysely<any>({ dialect }) }
}

function query(db: Kysely<any>, criticality: Criticality): Promise<unknown> {
  return withQueryContext({ timeoutMs: 2_000, criticality }, () => sql`select 1`.execute(db))
}

describe('saturation sampling: the fleet sheds together', () => {
  it('sheds sheddable work in every pool while the server is full of busy backends, serves critical work, and stops shedding after', async () => {
    const a = instance('fleet_a')
    const b = instance('fleet_b')
    const hogs: pg.Client[] = []
    try {
      for (const { db } of [a, b]) await query(db, 'critical')
      for (const { samples } of [a, b]) await waitFor('a sample', async () => samples.length > 0)
      for (const { db } of [a, b]) await query(db, 'sheddable') // the server is quiet: admitted
      // A sample taken while the other instance's query (or its sampler's) ran counts it: wait for a quiet one.
      await waitFor('a quiet sample', async () => a.samples.at(-1)?.busy === 0, 2_000)
      expect(a.samples.at(-1)).toMatchObject({ busy: 0, capacity: USABLE, saturation: 0 })
      // Fifteen busy backends of 18 usable slots (0.83: above sheddable's 0.8, below sheddable_plus's 0.9).
      for (let i = 0; i < 15; i++) {
        const hog = new pg.Client({ connectionString: server.url, application_name: 'hog' })
        await hog.connect()
        hogs.push(hog)
      }
      const running = hogs.map((hog) => hog.query('select pg_sleep(3)'))
      for (const { samples } of [a, b]) await waitFor('a saturated sample', async () => (samples.at(-1)?.busy ?? 0) >= 15, 2_000)
      for (const { db, dialect } of [a, b]) {
        const shed = await rejectionOf(query(db, 'sheddable'))
        expect(shed).toBeInstanceOf(LoadShedError)
        expect(shed.message).toMatch(/server saturation 0\.8\d/)
        await query(db, 'sheddable_plus')
        await query(db, 'critical')
        // The pool itself is all but idle: only the server's view sheds.
        expect(dialect.poolStats()).toMatchObject({ permits: 0, sheddingLevel: 'sheddable' })
        expect(dialect.poolStats().serverSaturation).toBeCloseTo(15 / USABLE, 2)
      }
      await Promise.all(running)
      for (const { samples } of [a, b]) await waitFor('a quiet sample', async () => samples.at(-1)?.busy === 0, 2_000)
      for (const { db } of [a, b]) await query(db, 'sheddable')
    } finally {
      await Promise.allSettled(hogs.map((hog) => hog.end()))
      await a.db.destroy()
      await b.db.destroy()
    }
  })

  it('is off by default: no sample is taken', async () => {
    const pool = new pg.Pool({ connectionString: appUrl, max: 2 })
    const dialect = new GovernedPostgresDialect({ pool })
    const samples: SaturationEvent[] = []
    dialect.events.on('saturation', (event) => samples.push(event))
    const db = new Kysely<any>({ dialect })
    try {
      await sql`select 1`.execute(db)
      await new Promise((resolve) => setTimeout(resolve, 300))
      expect(samples).toEqual([])
      expect(dialect.poolStats().serverSaturation).toBe(0)
    } finally {
      await db.destroy()
    }
  })
})
