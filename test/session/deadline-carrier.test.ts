import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { now } from '../../src/context/monotonic-clock.js'
import { carriedResult, carryDeadline, carryDeadlineOnServerClock, isCarriedDeadline } from '../../src/session/deadline-carrier.js'
import { useTestDatabase } from '../support/test-database.js'

describe('the deadline carrier (transaction pooling, outside a transaction)', () => {
  it('carries only what one simple query can: plain DML without parameters and without a `;` of its own, under a finite deadline', () => {
    const deadline = now() + 300
    const carried = carryDeadline('select pg_sleep(5)', [], deadline)
    expect(carried).toMatch(/^set local statement_timeout = \d+; select pg_sleep\(5\)$/)
    // The budget left as it is sent, whole milliseconds rounded up.
    const ms = Number(/= (\d+);/.exec(carried as string)?.[1])
    expect(ms).toBeGreaterThan(0)
    expect(ms).toBeLessThanOrEqual(300)
    // Never 0, which would mean no timeout at all.
    expect(carryDeadline('select 1', [], now() + 0.2)).toBe('set local statement_timeout = 1; select 1')
    for (const sql of ['with x as (select 1) select * from x', 'insert into t values (1)', '  UPDATE t set a = 1', 'delete from t', 'values (1)', 'table t', 'merge into t using s on true when matched then do nothing']) {
      expect(carryDeadline(sql, [], deadline)).toMatch(/; /)
    }
    expect(carryDeadline('select $1::int', [1], deadline)).toBeUndefined()
    expect(carryDeadline('select 1', [], Infinity)).toBeUndefined()
    expect(carryDeadline('select 1; vacuum', [], deadline)).toBeUndefined()
    for (const sql of ['vacuum t', 'create index concurrently i on t (a)', 'begin', 'set statement_timeout = 5', 'show statement_timeout', 'create database d']) {
      expect(carryDeadline(sql, [], deadline)).toBeUndefined()
    }
  })

  it("hands the caller its statement's result, not ours", () => {
    const ours = { command: 'SET', rowCount: null, rows: [] }
    const theirs = { command: 'INSERT', rowCount: 2, rows: [] }
    expect(carriedResult([ours, theirs])).toBe(theirs)
    expect(carriedResult(theirs)).toBe(theirs)
  })

  describe('on a real server', () => {
    const database = useTestDatabase()
    let client: pg.Client

    beforeAll(async () => {
      await database.admin('create table carried (n int)')
      client = new pg.Client({ connectionString: database.url })
      await client.connect()
    })

    afterAll(async () => {
      await client?.end()
    })

    it('the server stops the statement at the deadline by itself, and nothing outlives the statement', async () => {
      const text = carryDeadline('select pg_sleep(5)', [], now() + 200) as string
      const error = await client.query(text).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(isCarriedDeadline(error)).toBe(true)
      expect((error as { code: string }).code).toBe('57014')
      expect((await client.query('show statement_timeout')).rows[0].statement_timeout).toBe('0')
      const result = carriedResult(await client.query(carryDeadline('select 42 as n', [], now() + 5_000) as string))
      expect(result.rows).toEqual([{ n: 42 }])
      expect((await client.query('show statement_timeout')).rows[0].statement_timeout).toBe('0')
    })

    it('on the server clock: stops the statement at the deadline, and refuses one whose deadline passed before it reached the server (it never runs)', async () => {
      const stopped = await client.query(carryDeadlineOnServerClock('select pg_sleep(5)', [], now() + 200) as string).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect((stopped as { code: string }).code).toBe('57014')
      expect(isCarriedDeadline(stopped)).toBe(true)
      const refused = await client.query(carryDeadlineOnServerClock('insert into carried values (1)', [], now() - 5) as string).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect((refused as { code: string }).code).toBe('22023')
      expect(isCarriedDeadline(refused)).toBe(true)
      expect((await client.query('select count(*)::int as n from carried')).rows[0].n).toBe(0)
      expect((await client.query('show statement_timeout')).rows[0].statement_timeout).toBe('0')
      const result = carriedResult(await client.query(carryDeadlineOnServerClock('select 42 as n', [], now() + 5_000) as string))
      expect(result.rows).toEqual([{ n: 42 }])
      expect(carryDeadlineOnServerClock('select $1::int', [1], now() + 300)).toBeUndefined()
    })
  })
})
