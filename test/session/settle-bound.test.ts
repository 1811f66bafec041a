import { Kysely, sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DeadlineExceededError, GovernedPostgresDialect, QueryCanceledError, withQueryContext } from '../../src/index.js'
import { pidOfRunning, rejectionOf, sleep, waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()
let db: Kysely<any>
let dialect: GovernedPostgresDialect

beforeAll(async () => {
  // Swallows every cancel (ours and statement_timeout's) for `ms`: a statement that settles late. The sleeping loop
  // runs inside the handled block, so that a cancel can land outside it only just after one was caught (a loop
  // around a block per sleep let one in between two sleeps, and the statement then ended at once).
  await database.admin(`
    create or replace function ignore_cancels_for(ms int) returns int language plpgsql as $$
    declare
      until timestamptz := clock_timestamp() + make_interval(secs => ms / 1000.0);
    begin
      while clock_timestamp() < until loop
        begin
          while clock_timestamp() < until loop
            perform pg_sleep(0.01);
          end loop;
        exception when query_canceled then null;
        end;
      end loop;
      return 1;
    end $$`)
  dialect = new GovernedPostgresDialect({ pool: database.pool({ max: 2 }) })
  db = new Kysely<any>({ dialect })
})
afterAll(() => db?.destroy())

describe('every phase a caller can be in ends at its deadline', () => {
  it('a statement waiting for the previous one to settle after its cancel gives up at its own deadline', async () => {
    await db.connection().execute(async (conn) => {
      // Stopped once it runs inside the function (a cancel that came while it was still being planned, as a 100 ms
      // deadline could on a loaded machine, would end it at once and leave nothing to settle).
      const controller = new AbortController()
      const pending = rejectionOf(withQueryContext({ signal: controller.signal }, () => sql`select ignore_cancels_for(1500) as settles_late`.execute(conn)))
      await pidOfRunning(database, 'settles_late')
      await sleep(50)
      controller.abort()
      expect(await pending).toBeInstanceOf(QueryCanceledError)
      const started = performance.now()
      const second = await rejectionOf(withQueryContext({ timeoutMs: 200 }, () => sql`select 1`.execute(conn)))
      const elapsed = performance.now() - started
      expect(second).toBeInstanceOf(DeadlineExceededError)
      expect(second.phase).toBe('waiting')
      // The previous statement settles only after about 1400 ms more: the caller did not wait for it.
      expect(elapsed).toBeLessThan(1_000)
    })
    // The connection was held until the statement settled, then came back clean.
    await waitFor('the pool to be at rest', async () => dialect.poolStats().permits === 0, 5_000)
    const { rows } = await sql<{ one: number }>`select 1 as one`.execute(db)
    expect(rows).toEqual([{ one: 1 }])
  })
})

describe('the server error is kept', () => {
  it('an aborted statement gets the server answer to its cancel as cause', async () => {
    const controller = new AbortController()
    const pending = withQueryContext({ signal: controller.signal }, () => sql`select pg_sleep(30) as aborted_for_cause`.execute(db))
    await pidOfRunning(database, 'aborted_for_cause')
    controller.abort(new Error('caller left'))
    const error = await rejectionOf(pending)
    expect(error).toBeInstanceOf(QueryCanceledError)
    // The caller is answered at the abort; the server's answer (57014) arrives just after and is attached.
    await waitFor('the server error to arrive', async () => error.cause !== undefined)
    expect(error.cause).toMatchObject({ code: '57014' })
    expect(error.reason).toEqual(new Error('caller left'))
  })
})
