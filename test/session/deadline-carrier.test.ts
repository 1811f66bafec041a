import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { now } from '../../src/context/monotonic-clock.js'
import { carriedQuery } from '../../src/session/carried-query.js'
import { carriedResult, carryDeadline, isCarriedDeadline, isCloseCheckRefused, type CarriedStatement, type CarrierSettings } from '../../src/session/deadline-carrier.js'
import type { PgClient, PgQueryResult } from '../../src/session/pg-types.js'
import { useTestDatabase } from '../support/test-database.js'

const ON_OUR_CLOCK: CarrierSettings = { onServerClock: false, closeCheckMs: 10 }
const ON_SERVER_CLOCK: CarrierSettings = { onServerClock: true, closeCheckMs: 10 }
const NO_CLOSE_CHECK: CarrierSettings = { onServerClock: false, closeCheckMs: undefined }

function simpleText(carried: CarriedStatement | undefined): string {
  if (carried?.kind !== 'simple') throw new Error(`not carried in a simple query: ${JSON.stringify(carried)}`)
  return carried.text
}

describe('the deadline carrier (transaction pooling, outside a transaction)', () => {
  it('carries plain DML under a finite deadline: without parameters in one simple query (no `;` of its own), with parameters as extended-protocol prefixes', () => {
    const deadline = now() + 300
    const text = simpleText(carryDeadline('select pg_sleep(5)', [], deadline, ON_OUR_CLOCK))
    expect(text).toMatch(/^set local statement_timeout = \d+; set local client_connection_check_interval = 10; select pg_sleep\(5\)$/)
    // The budget left as it is sent, whole milliseconds rounded up.
    const ms = Number(/= (\d+);/.exec(text)?.[1])
    expect(ms).toBeGreaterThan(0)
    expect(ms).toBeLessThanOrEqual(300)
    // Never 0, which would mean no timeout at all.
    expect(carryDeadline('select 1', [], now() + 0.2, NO_CLOSE_CHECK)).toEqual({ kind: 'simple', text: 'set local statement_timeout = 1; select 1', prefixCount: 1 })
    for (const sql of ['with x as (select 1) select * from x', 'insert into t values (1)', '  UPDATE t set a = 1', 'delete from t', 'values (1)', 'table t', 'merge into t using s on true when matched then do nothing']) {
      expect(simpleText(carryDeadline(sql, [], deadline, ON_OUR_CLOCK))).toMatch(/; /)
    }
    const extended = carryDeadline('select $1::int', [1], deadline, ON_OUR_CLOCK)
    expect(extended?.kind).toBe('extended')
    // One SELECT of set_config(..., true): a SET LOCAL between Syncs would warn (see the notices checked below).
    expect(extended?.kind === 'extended' && extended.prefixes.map((p) => p.replace(/'\d+', true\), set/, "'N', true), set"))).toEqual([
      "select set_config('statement_timeout', 'N', true), set_config('client_connection_check_interval', '10', true)",
    ])
    // A `;` inside a parameterized statement cannot be a second statement: the extended protocol takes one.
    expect(carryDeadline("select $1::text || ';'", ['a'], deadline, ON_OUR_CLOCK)?.kind).toBe('extended')
    expect(carryDeadline('select 1', [], Infinity, ON_OUR_CLOCK)).toBeUndefined()
    expect(carryDeadline('select 1; vacuum', [], deadline, ON_OUR_CLOCK)).toBeUndefined()
    for (const sql of ['vacuum t', 'create index concurrently i on t (a)', 'begin', 'set statement_timeout = 5', 'show statement_timeout', 'create database d']) {
      expect(carryDeadline(sql, [], deadline, ON_OUR_CLOCK)).toBeUndefined()
      expect(carryDeadline(sql, [1], deadline, ON_OUR_CLOCK)).toBeUndefined()
    }
  })

  it("hands the caller its statement's result, not ours", () => {
    const ours = { command: 'SET', rowCount: null, rows: [] }
    const theirs = { command: 'INSERT', rowCount: 2, rows: [] }
    expect(carriedResult([ours, theirs], 1)).toBe(theirs)
    expect(carriedResult([ours, ours, theirs], 2)).toBe(theirs)
    expect(carriedResult(theirs, 2)).toBe(theirs)
  })

  it('knows the refusals of the close check (Windows servers, PostgreSQL 13 and older) from anything else', () => {
    expect(isCloseCheckRefused({ code: '22023', message: 'invalid value for parameter "client_connection_check_interval": 10' })).toBe(true)
    expect(isCloseCheckRefused({ code: '42704', message: 'unrecognized configuration parameter "client_connection_check_interval"' })).toBe(true)
    expect(isCloseCheckRefused({ code: '22023', message: '-1 ms is outside the valid range for parameter "statement_timeout"' })).toBe(false)
    expect(isCloseCheckRefused({ code: '57014', message: 'client_connection_check_interval' })).toBe(false)
    expect(isCloseCheckRefused(undefined)).toBe(false)
  })

  describe('on a real server', () => {
    const database = useTestDatabase()
    let client: pg.Client
    const notices: string[] = []

    /** A statement with parameters, carried as the session sends it. */
    const runExtended = <R>(carried: CarriedStatement | undefined, sql: string, values: unknown[]): Promise<PgQueryResult<R>> =>
      new Promise((resolve, reject) => {
        if (carried?.kind !== 'extended') throw new Error('not carried by the extended protocol')
        const query = carriedQuery<R>(client as unknown as PgClient, carried.prefixes, sql, values, (error, result) => (error ? reject(error) : resolve(result)))
        if (!query) throw new Error("pg's Client has no Query class to extend")
        ;(client as unknown as PgClient).query(query)
      })
    const failure = (promise: Promise<unknown>): Promise<unknown> =>
      promise.then(
        () => undefined,
        (e: unknown) => e,
      )
    const settings = async (): Promise<unknown> =>
      (await client.query(`select current_setting('statement_timeout') as st, current_setting('client_connection_check_interval') as cc`)).rows[0]

    beforeAll(async () => {
      await database.admin('create table carried (n int)')
      client = new pg.Client({ connectionString: database.url })
      client.on('notice', (notice) => notices.push(notice.message ?? ''))
      await client.connect()
    })

    afterAll(async () => {
      await client?.end()
    })

    it('the server stops the statement at the deadline by itself, and nothing outlives the statement', async () => {
      const error = await failure(client.query(simpleText(carryDeadline('select pg_sleep(5)', [], now() + 200, ON_OUR_CLOCK))))
      expect(isCarriedDeadline(error)).toBe(true)
      expect((error as { code: string }).code).toBe('57014')
      expect(await settings()).toEqual({ st: '0', cc: '0' })
      const carried = carryDeadline('select 42 as n', [], now() + 5_000, ON_OUR_CLOCK)
      const result = carriedResult(await client.query(simpleText(carried)), carried?.kind === 'simple' ? carried.prefixCount : 0)
      expect(result.rows).toEqual([{ n: 42 }])
      expect(await settings()).toEqual({ st: '0', cc: '0' })
    })

    it('with parameters: the prefixes apply to the statement in one round trip, its result is its own, and nothing outlives it', async () => {
      const startedAt = now()
      const error = await failure(runExtended(carryDeadline('select pg_sleep($1)', [5], now() + 200, ON_OUR_CLOCK), 'select pg_sleep($1)', [5]))
      expect((error as { code: string }).code).toBe('57014')
      expect(isCarriedDeadline(error)).toBe(true)
      expect(now() - startedAt).toBeLessThan(4_000)
      expect(await settings()).toEqual({ st: '0', cc: '0' })
      // What the statement saw: our SET LOCALs; and only its own rows and command.
      const sql = `select $1::int as n, current_setting('statement_timeout') as st, current_setting('client_connection_check_interval') as cc`
      const result = await runExtended<{ n: number; st: string; cc: string }>(carryDeadline(sql, [7], now() + 5_000, ON_OUR_CLOCK), sql, [7])
      expect(result.command).toBe('SELECT')
      expect(result.rows).toHaveLength(1)
      expect(result.rows[0]?.n).toBe(7)
      expect(result.rows[0]?.cc).toBe('10ms')
      expect(Number.parseFloat(result.rows[0]?.st ?? '')).toBeGreaterThan(4)
      expect(await settings()).toEqual({ st: '0', cc: '0' })
      // No WARNING for each statement (a SET LOCAL between two Syncs sends one, which the server also logs).
      expect(notices).toEqual([])
      // A write: its rowCount, and it commits with its implicit transaction.
      const insert = 'insert into carried values ($1), ($2)'
      expect((await runExtended(carryDeadline(insert, [1, 2], now() + 5_000, ON_OUR_CLOCK), insert, [1, 2])).rowCount).toBe(2)
      expect((await client.query('select count(*)::int as n from carried')).rows[0].n).toBe(2)
      // A statement error is the caller's, and the client stays usable.
      const bad = await failure(runExtended(carryDeadline('select 1 / $1::int', [0], now() + 5_000, ON_OUR_CLOCK), 'select 1 / $1::int', [0]))
      expect((bad as { code: string }).code).toBe('22012')
      expect((await client.query('select 1 as one')).rows).toEqual([{ one: 1 }])
      await database.admin('truncate carried')
    })

    it('on the server clock: stops the statement at the deadline, and refuses one whose deadline passed before it reached the server (it never runs)', async () => {
      const stopped = await failure(client.query(simpleText(carryDeadline('select pg_sleep(5)', [], now() + 200, ON_SERVER_CLOCK))))
      expect((stopped as { code: string }).code).toBe('57014')
      expect(isCarriedDeadline(stopped)).toBe(true)
      const refused = await failure(client.query(simpleText(carryDeadline('insert into carried values (1)', [], now() - 5, ON_SERVER_CLOCK))))
      expect((refused as { code: string }).code).toBe('22023')
      expect(isCarriedDeadline(refused)).toBe(true)
      // With parameters too: its rows are dropped, the statement's are kept.
      const insert = 'insert into carried values ($1)'
      const refusedExtended = await failure(runExtended(carryDeadline(insert, [2], now() - 5, ON_SERVER_CLOCK), insert, [2]))
      expect(isCarriedDeadline(refusedExtended)).toBe(true)
      expect((await client.query('select count(*)::int as n from carried')).rows[0].n).toBe(0)
      expect(await settings()).toEqual({ st: '0', cc: '0' })
      const carried = carryDeadline('select 42 as n', [], now() + 5_000, ON_SERVER_CLOCK)
      // One SELECT carries both settings on the server's clock.
      expect(carried?.kind === 'simple' && carried.prefixCount).toBe(1)
      expect(carriedResult(await client.query(simpleText(carried)), 1).rows).toEqual([{ n: 42 }])
      const result = await runExtended<{ n: number }>(carryDeadline('select $1::int as n', [43], now() + 5_000, ON_SERVER_CLOCK), 'select $1::int as n', [43])
      expect(result.rows).toEqual([{ n: 43 }])
      expect(notices).toEqual([])
    })
  })
})
