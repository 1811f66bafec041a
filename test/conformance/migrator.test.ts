/**
 * Conformance of GovernedPostgresDialect with Kysely's PostgresDialect:
 * Kysely's Migrator (up, down, a failing migration) and its migration lock
 * under two racing Migrators.
 */
import { sql, type Kysely } from 'kysely'
import { Migrator, NO_MIGRATIONS, type Migration, type MigrationProvider, type MigrationResultSet } from 'kysely/migration'
import pg from 'pg'
import { beforeEach, describe, expect, it, vi } from 'vitest'
import { useTestDatabase } from '../support/test-database.js'
import { createHarness, DIALECTS, expectPoolIdle, ParityLog, pgErrorShape, type Harness } from './dialects.js'

/** An in-memory provider: Kysely sorts migrations by name. */
function provider(migrations: Record<string, Migration>): MigrationProvider {
  return { getMigrations: async () => migrations }
}

const PET_MIGRATIONS: Record<string, Migration> = {
  '0001_create_pet': {
    up: async (db: Kysely<any>) => {
      await db.schema
        .createTable('pet')
        .addColumn('id', 'serial', (col) => col.primaryKey())
        .addColumn('name', 'text', (col) => col.notNull())
        .execute()
    },
    down: async (db: Kysely<any>) => {
      await db.schema.dropTable('pet').execute()
    },
  },
  '0002_add_species': {
    up: async (db: Kysely<any>) => {
      await db.schema.alterTable('pet').addColumn('species', 'text').execute()
    },
    down: async (db: Kysely<any>) => {
      await db.schema.alterTable('pet').dropColumn('species').execute()
    },
  },
  '0003_seed_rex': {
    up: async (db: Kysely<any>) => {
      await db.insertInto('pet').values({ name: 'Rex', species: 'dog' }).execute()
    },
    down: async (db: Kysely<any>) => {
      await db.deleteFrom('pet').where('name', '=', 'Rex').execute()
    },
  },
}

/** Backends of this file's database waiting for an advisory lock. */
const WAITING_ADVISORY_LOCKS = `
  select count(*)::int as n from pg_locks
  where locktype = 'advisory' and not granted and database = (select oid from pg_database where datname = current_database())`

const database = useTestDatabase()
const parity = new ParityLog()

async function columnsOf(table: string): Promise<string[]> {
  const rows = await database.admin<{ column_name: string }>(
    `select column_name from information_schema.columns where table_schema = 'public' and table_name = $1 order by ordinal_position`,
    [table],
  )
  return rows.map((row) => row.column_name)
}

async function executedMigrations(): Promise<string[]> {
  const rows = await database.admin<{ name: string }>('select name from kysely_migration order by name')
  return rows.map((row) => row.name)
}

function up(...names: string[]): MigrationResultSet['results'] {
  return names.map((migrationName) => ({ migrationName, direction: 'Up', status: 'Success' }))
}

describe.each(DIALECTS)('%s', (dialect, makeDialect) => {
  beforeEach(async () => {
    await database.admin('drop table if exists kysely_migration, kysely_migration_lock, pet, race_log cascade')
  })

  async function withHarness<T>(fn: (h: Harness<any>) => Promise<T>): Promise<T> {
    const h = createHarness<any>(database, makeDialect)
    try {
      const result = await fn(h)
      await expectPoolIdle(h)
      return result
    } finally {
      await h.db.destroy()
    }
  }

  it('migrateToLatest runs every pending migration once', async () => {
    await withHarness(async (h) => {
      const migrator = new Migrator({ db: h.db, provider: provider(PET_MIGRATIONS) })
      const first = await migrator.migrateToLatest()
      expect(first).toEqual({ error: undefined, results: up('0001_create_pet', '0002_add_species', '0003_seed_rex') })
      expect(await columnsOf('pet')).toEqual(['id', 'name', 'species'])
      expect(await database.admin('select id, name, species from pet')).toEqual([{ id: 1, name: 'Rex', species: 'dog' }])
      expect(await executedMigrations()).toEqual(['0001_create_pet', '0002_add_species', '0003_seed_rex'])
      const infos = await migrator.getMigrations()
      expect(infos.map((info) => [info.name, info.executedAt instanceof Date])).toEqual([
        ['0001_create_pet', true],
        ['0002_add_species', true],
        ['0003_seed_rex', true],
      ])
      const second = await migrator.migrateToLatest()
      expect(second).toEqual({ results: [] })
      parity.record(dialect, 'migrateToLatest', [first, second])
    })
  })

  it('migrateDown undoes one migration at a time, migrateTo(NO_MIGRATIONS) the rest', async () => {
    await withHarness(async (h) => {
      const migrator = new Migrator({ db: h.db, provider: provider(PET_MIGRATIONS) })
      expect((await migrator.migrateToLatest()).error).toBeUndefined()
      const down1 = await migrator.migrateDown()
      expect(down1).toEqual({ error: undefined, results: [{ migrationName: '0003_seed_rex', direction: 'Down', status: 'Success' }] })
      expect(await database.admin('select count(*)::int as n from pet')).toEqual([{ n: 0 }])
      const down2 = await migrator.migrateDown()
      expect(down2).toEqual({ error: undefined, results: [{ migrationName: '0002_add_species', direction: 'Down', status: 'Success' }] })
      expect(await columnsOf('pet')).toEqual(['id', 'name'])
      expect(await executedMigrations()).toEqual(['0001_create_pet'])
      const rest = await migrator.migrateTo(NO_MIGRATIONS)
      expect(rest).toEqual({ error: undefined, results: [{ migrationName: '0001_create_pet', direction: 'Down', status: 'Success' }] })
      expect(await columnsOf('pet')).toEqual([])
      expect(await executedMigrations()).toEqual([])
      parity.record(dialect, 'migrateDown', [down1, down2, rest])
    })
  })

  it('a failing migration rolls the whole run back and reports which one failed', async () => {
    await withHarness(async (h) => {
      const migrator = new Migrator({
        db: h.db,
        provider: provider({
          '0001_create_pet': PET_MIGRATIONS['0001_create_pet']!,
          '0002_broken': {
            up: async (db: Kysely<any>) => {
              await sql`insert into no_such_table values (1)`.execute(db)
            },
          },
          '0003_never': { up: async () => expect.fail('0003 must not run') },
        }),
      })
      const result = await migrator.migrateToLatest()
      expect(result.results).toEqual([
        { migrationName: '0001_create_pet', direction: 'Up', status: 'Success' },
        { migrationName: '0002_broken', direction: 'Up', status: 'Error' },
        { migrationName: '0003_never', direction: 'Up', status: 'NotExecuted' },
      ])
      expect(result.error).toBeInstanceOf(pg.DatabaseError)
      expect(pgErrorShape(result.error)).toMatchObject({ code: '42P01', message: 'relation "no_such_table" does not exist' })
      // The migrations ran in one transaction: 0001 was rolled back with it.
      expect(await columnsOf('pet')).toEqual([])
      expect(await executedMigrations()).toEqual([])
      parity.record(dialect, 'failingMigration', [result.results, pgErrorShape(result.error)])
    })
  })

  it('two racing Migrators: the lock lets exactly one run each migration', async () => {
    await database.admin('create table race_log (migration text not null, pid int not null)')
    const slow = (name: string): Migration => ({
      up: async (db: Kysely<any>) => {
        await sql`select pg_sleep(0.3)`.execute(db)
        await sql`insert into race_log (migration, pid) values (${name}, pg_backend_pid())`.execute(db)
      },
    })
    const migrations = { '0001_a': slow('0001_a'), '0002_b': slow('0002_b'), '0003_c': slow('0003_c') }
    const a = createHarness<any>(database, makeDialect)
    const b = createHarness<any>(database, makeDialect)
    try {
      const migratorA = new Migrator({ db: a.db, provider: provider(migrations) })
      const migratorB = new Migrator({ db: b.db, provider: provider(migrations) })
      let done = false
      let lockWaiters = 0
      const watcher = (async () => {
        while (!done) {
          const rows = await database.admin<{ n: number }>(WAITING_ADVISORY_LOCKS)
          lockWaiters = Math.max(lockWaiters, rows[0]?.n ?? 0)
          await new Promise((resolve) => setTimeout(resolve, 20))
        }
      })()
      const results = await Promise.all([migratorA.migrateToLatest(), migratorB.migrateToLatest()]).finally(() => {
        done = true
      })
      await watcher
      // One Migrator waited on the other's advisory lock.
      expect(lockWaiters).toBe(1)
      expect(results.map((r) => r.error)).toEqual([undefined, undefined])
      const ran = results.map((r) => r.results?.length).sort()
      expect(ran).toEqual([0, 3])
      const winner = results.find((r) => r.results?.length === 3)
      expect(winner?.results).toEqual(up('0001_a', '0002_b', '0003_c'))
      const log = await database.admin<{ migration: string; pid: number }>('select migration, pid from race_log order by migration')
      expect(log.map((row) => row.migration)).toEqual(['0001_a', '0002_b', '0003_c'])
      // All three ran on the winner's one pinned connection.
      expect(new Set(log.map((row) => row.pid)).size).toBe(1)
      expect(await executedMigrations()).toEqual(['0001_a', '0002_b', '0003_c'])
      await expectPoolIdle(a)
      await expectPoolIdle(b)
      parity.record(dialect, 'race', { ran, lockWaiters, winner: winner?.results })
    } finally {
      await Promise.all([a.db.destroy(), b.db.destroy()])
    }
  })

  it('a Migrator over a lock held elsewhere waits for it, then finds nothing to do', async () => {
    await withHarness(async (h) => {
      const migrator = new Migrator({ db: h.db, provider: provider(PET_MIGRATIONS) })
      expect((await migrator.migrateToLatest()).error).toBeUndefined()
      // Kysely's PostgresAdapter takes a session advisory lock with this key.
      await database.admin('select pg_advisory_lock(3853314791062309107)')
      let released = false
      const pending = migrator.migrateToLatest().then((result) => ({ result, released }))
      await vi.waitFor(
        async () => {
          const rows = await database.admin<{ n: number }>(WAITING_ADVISORY_LOCKS)
          expect(rows).toEqual([{ n: 1 }])
        },
        { timeout: 5_000, interval: 20 },
      )
      released = true
      await database.admin('select pg_advisory_unlock(3853314791062309107)')
      const { result, released: wasReleased } = await pending
      expect(wasReleased).toBe(true)
      expect(result).toEqual({ results: [] })
    })
  })
})

describe('parity', () => {
  it('both dialects recorded the same observations', () => {
    parity.expectParity()
  })
})
