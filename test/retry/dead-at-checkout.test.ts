import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { attemptsOf, GovernedPostgresDialect, withQueryContext, type RetryEvent, type RetryOptions } from '../../src/index.js'
import { pidOfRunning, rejectionOf, sleep } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()

beforeAll(async () => {
  await database.admin('create table ledger (id serial primary key, note text not null)')
})

/**
 * Holds the event loop for `ms`, as a busy service does: the socket of a
 * killed backend is not read meanwhile, so the pool still holds its client as
 * idle and healthy when the next query takes it.
 */
function busyFor(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

interface Setup {
  readonly db: Kysely<any>
  readonly events: RetryEvent[]
}

const setups: Setup[] = []
afterAll(() => Promise.all(setups.map((setup) => setup.db.destroy())))

function setup(retry?: RetryOptions | false): Setup {
  const dialect = new GovernedPostgresDialect({ pool: database.pool({ max: 2 }), retry, controlConnection: { eager: false } })
  const events: RetryEvent[] = []
  dialect.events.on('retry', (event) => events.push(event))
  const made = { db: new Kysely<any>({ dialect }), events }
  setups.push(made)
  return made
}

/**
 * Runs one query so that the pool holds one idle connection, lets it sit idle
 * for `idleMs`, then kills its backend unseen: the kill is sent and the event
 * loop held at once, so the backend exits (its FATAL 57P01 and the close wait
 * in our socket's buffer) before anything here reads a socket, not even the
 * answer to the kill. The caller's next query starts before `settled` is awaited.
 */
async function killIdleBackend(db: Kysely<any>, idleMs: number): Promise<{ readonly pid: number; readonly settled: Promise<unknown> }> {
  const { pid } = (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(db)).rows[0] as { pid: number }
  await sleep(idleMs)
  const settled = database.admin('select pg_terminate_backend($1)', [pid])
  busyFor(400)
  return { pid, settled }
}

describe('a session found dead at checkout is retried on another connection (always safe, on by default)', () => {
  it('a backend killed while its connection sat idle in the pool: the next query succeeds on another connection, with the retry recorded', async () => {
    const { db, events } = setup()
    // The warm stack hands it back to pg-pool after 250 ms; 1 s later (the default checkIdleAfterMs) it is due a check.
    const { pid: killed, settled } = await killIdleBackend(db, 1_500)
    const started = performance.now()
    const { rows } = await withQueryContext({ timeoutMs: 3_000 }, () => sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(db))
    await settled
    console.log(`[dead-at-checkout] killed ${killed}, served by ${rows[0]?.pid} in ${(performance.now() - started).toFixed(0)} ms; retries ${JSON.stringify(events)}`)
    expect(rows[0]?.pid).not.toBe(killed)
    expect(events).toHaveLength(1)
    expect(events[0]).toMatchObject({ reason: 'dead_at_checkout', outcome: 'retried', attempt: 1, delayMs: 0 })
  })

  it('a write on such a connection is sent once, on the new connection: one row at the server', async () => {
    const { db, events } = setup()
    await database.admin('truncate ledger')
    const { settled } = await killIdleBackend(db, 1_500)
    await withQueryContext({ timeoutMs: 3_000 }, () => db.insertInto('ledger').values({ note: 'after a dead idle session' }).execute())
    await settled
    const rows = await database.admin<{ count: string }>('select count(*) from ledger')
    expect(Number(rows[0]?.count)).toBe(1)
    expect(events.map((e) => `${e.reason}/${e.outcome}`)).toEqual(['dead_at_checkout/retried'])
  })

  it('with retry: false nothing is checked or retried: the query meets the dead session and gets its 57P01', async () => {
    const { db, events } = setup(false)
    const { settled } = await killIdleBackend(db, 1_500)
    const error = await rejectionOf(withQueryContext({ timeoutMs: 3_000 }, () => sql`select 1`.execute(db)))
    await settled
    expect((error as { code?: string }).code).toBe('57P01')
    expect(attemptsOf(error)).toBe(1)
    expect(events).toEqual([])
  })

  it('a write whose connection broke after it was sent is never re-sent: the caller gets the error, no row at the server', async () => {
    const { db, events } = setup()
    await database.admin('truncate ledger')
    const tag = `broken-write-${Date.now()}`
    const writing = rejectionOf(
      withQueryContext({ timeoutMs: 5_000 }, () => sql`insert into ledger (note) select ${tag} from pg_sleep(0.5) /* ${sql.raw(tag)} */`.execute(db)),
    )
    const pid = await pidOfRunning(database, tag)
    await database.admin('select pg_terminate_backend($1)', [pid])
    const error = await writing
    // Had it been sent again on another connection, its row would be there (the killed run was rolled back).
    await sleep(800)
    const rows = await database.admin<{ count: string }>('select count(*) from ledger')
    console.log(`[dead-at-checkout] write broken while running: ${(error as { code?: string }).code}, attempts ${attemptsOf(error)}, rows ${rows[0]?.count}`)
    expect((error as { code?: string }).code).toBe('57P01')
    expect(attemptsOf(error)).toBe(1)
    expect(Number(rows[0]?.count)).toBe(0)
    expect(events).toEqual([])
  })
})
