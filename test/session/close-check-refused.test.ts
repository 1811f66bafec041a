import pg from 'pg'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PolicyRegistry } from '../../src/context/policy-registry.js'
import { withQueryContext } from '../../src/context/query-context.js'
import { Canceller } from '../../src/session/canceller.js'
import type { CarriedStatement } from '../../src/session/deadline-carrier.js'
import { GovernedSession } from '../../src/session/governed-session.js'
import type { PgPoolClient, PgStandaloneClient } from '../../src/session/pg-types.js'
import { sessionStrategyFor, type SessionStrategy } from '../../src/session/session-strategy.js'
import { StatementTimeoutLadder } from '../../src/session/statement-timeout-ladder.js'
import { GovernorEvents, type QueryEvent } from '../../src/telemetry/governor-events.js'
import { useTestDatabase } from '../support/test-database.js'

/**
 * A server that refuses `client_connection_check_interval` (Windows; before
 * PostgreSQL 14) is played by a real server asked for a value out of its
 * range, which it refuses with the same SQLSTATE (22023) naming the parameter.
 */
function refusedCheck(carried: CarriedStatement | undefined): CarriedStatement | undefined {
  const outOfRange = (text: string): string =>
    text.replace(/client_connection_check_interval = \d+/, 'client_connection_check_interval = -1').replace(/'client_connection_check_interval', '\d+'/, "'client_connection_check_interval', '-1'")
  if (carried?.kind === 'simple') return { ...carried, text: outOfRange(carried.text) }
  if (carried?.kind === 'extended') return { ...carried, prefixes: carried.prefixes.map(outOfRange) }
  return carried
}

describe('a server that refuses the close check of carried statements (transaction pooling)', () => {
  const database = useTestDatabase()
  let client: pg.Client
  const queries: QueryEvent[] = []

  beforeAll(async () => {
    await database.admin('create table close_check_refused (n int)')
    client = new pg.Client({ connectionString: database.url })
    await client.connect()
  })

  afterAll(async () => {
    await client?.end()
  })

  function sessionWith(strategy: SessionStrategy): GovernedSession {
    const events = new GovernorEvents()
    events.on('query', (event) => queries.push(event))
    const canceller = new Canceller({
      createClient: () => new pg.Client({ connectionString: database.url }) as unknown as PgStandaloneClient,
      target: { host: '127.0.0.1', port: 1 },
      controlTimeoutMs: 1_000,
      reconnectDelayMs: 1_000,
    })
    return new GovernedSession(client as unknown as PgPoolClient, {
      canceller,
      ladder: new StatementTimeoutLadder(),
      policies: new PolicyRegistry({}),
      events,
      cursor: undefined,
      sqlComment: false,
      strategy,
      discarded: () => undefined,
    })
  }

  it('runs the statement once, without the check, and carries none from then on (with and without parameters)', async () => {
    const pool = sessionStrategyFor('pgbouncer-transaction')
    let refusals = 0
    // The pool's own strategy, but every close check it carries is one the server refuses.
    const strategy: SessionStrategy = {
      ...pool,
      carry: (...args) => refusedCheck(pool.carry(...args)),
      closeCheckRefused: () => {
        refusals++
        pool.closeCheckRefused()
      },
    }
    const session = sessionWith(strategy)
    const inserted = await withQueryContext({ timeoutMs: 5_000 }, () => session.execute('insert into close_check_refused values ($1)', [1]))
    expect(inserted.rowCount).toBe(1)
    expect(refusals).toBe(1)
    // One insert landed: the refused attempt ran nothing of it.
    expect(await database.admin('select n from close_check_refused')).toEqual([{ n: 1 }])
    expect(queries.filter((event) => event.outcome === 'error')).toHaveLength(1)
    const { rows } = await withQueryContext({ timeoutMs: 5_000 }, () => session.execute<{ n: number }>('select count(*)::int as n from close_check_refused', []))
    expect(rows).toEqual([{ n: 1 }])
    expect(refusals).toBe(1)
    // The statement_timeout is still carried.
    const stopped = await withQueryContext({ timeoutMs: 200 }, () => session.execute('select pg_sleep(5)', [])).then(
      () => undefined,
      (error: unknown) => error,
    )
    expect((stopped as { code?: string }).code).toBe('DEADLINE_EXCEEDED')
  })
})
