import { now } from '../context/monotonic-clock.js'
import type { PgQueryResult } from './pg-types.js'

/**
 * Statements that may run inside the implicit transaction of a
 * multi-statement simple query: plain DML. Anything else (VACUUM, CREATE
 * INDEX CONCURRENTLY, a caller's own BEGIN or SET) is sent as it is.
 */
const CARRIABLE = /^\s*(?:select|with|insert|update|delete|values|table|merge)\b/i

/**
 * The statement with its deadline in front, as one simple query, or
 * undefined when it cannot be carried so:
 *
 *     set local statement_timeout = <ms left>; <statement>
 *
 * Two statements in one simple query run in one implicit transaction, so the
 * SET LOCAL ends with it: nothing outlives the statement on a server
 * connection that PgBouncer (transaction pooling) hands to another client
 * next, and it costs no round trip. The server then stops the statement by
 * itself when its time is up, however slow a cancel would be (through
 * PgBouncer 1.18 each cancel opens a new server connection, one at a time per
 * pool).
 *
 * The time left is the budget left as the statement is sent, and the server
 * counts from when it gets the statement: a running statement stops at or
 * just after its deadline, but one that waited in PgBouncer's queue gets the
 * time it waited on top. The session closes the connection of a carried
 * statement at its deadline, which makes PgBouncer drop one still queued.
 * A statement that left the queue before its deadline runs late by the time
 * it waited; {@link carryDeadlineOnServerClock} covers that too, at a cost.
 *
 * Only for a statement without parameters (a simple query has none; pg sends
 * one with parameters as an extended-protocol query, which takes one
 * statement) and without a `;` of its own (a second statement of the
 * caller's might not run in a transaction block).
 *
 * @example
 * ```ts
 * carryDeadline('select pg_sleep(5)', [], now() + 300) // 'set local statement_timeout = 300; select pg_sleep(5)'
 * carryDeadline('select $1::int', [1], now() + 300) // undefined
 * ```
 */
export function carryDeadline(sql: string, parameters: ReadonlyArray<unknown>, deadline: number): string | undefined {
  if (parameters.length > 0 || deadline === Infinity || sql.includes(';') || !CARRIABLE.test(sql)) return undefined
  // A number we computed, never caller text; 0 would mean no timeout at all.
  return `set local statement_timeout = ${Math.max(1, Math.ceil(deadline - now()))}; ${sql}`
}

/** What the server answers to a statement carried on its clock whose deadline had passed when it got there (22023; it does not run). */
const REFUSED = /-1 ms is outside the valid range for parameter "statement_timeout"/

/**
 * As {@link carryDeadline}, but the server works the time left out itself as
 * the statement starts, from the deadline on the wall clock:
 *
 *     select set_config('statement_timeout', <ms left by the server's clock>, true) from ...; <statement>
 *
 * A statement that waited in PgBouncer's queue gets only what is left of its
 * budget, and one whose deadline passed there is refused before it runs
 * (set_config fails on -1, which aborts the implicit transaction). Never more
 * than the budget left when sent, so a server clock behind ours changes
 * nothing; one ahead by e ms stops statements e ms early (clocks in sync by
 * NTP are assumed). The price: a SELECT to plan and run, not a SET, measured
 * at 1.4-1.7x the cost of a `select 1` through PgBouncer against 1.1x for
 * the SET LOCAL (README, "Behind PgBouncer"). Opt-in:
 * `pooler: { mode: 'pgbouncer-transaction', deadlineOnServerClock: true }`.
 *
 * @example
 * ```ts
 * carryDeadlineOnServerClock('select pg_sleep(5)', [], now() + 300) // "select set_config('statement_timeout', ...); select pg_sleep(5)"
 * ```
 */
export function carryDeadlineOnServerClock(sql: string, parameters: ReadonlyArray<unknown>, deadline: number): string | undefined {
  if (parameters.length > 0 || deadline === Infinity || sql.includes(';') || !CARRIABLE.test(sql)) return undefined
  const remainingMs = Math.ceil(deadline - now())
  // Numbers we computed, never caller text. A value of 0 would mean no timeout at all: -1 refuses instead.
  return (
    `select set_config('statement_timeout', (case when ms > 0 then ceil(ms)::int else -1 end)::text, true) ` +
    `from (values (least(${remainingMs}, ${Date.now() + remainingMs} - extract(epoch from clock_timestamp()) * 1000))) as deadline(ms); ${sql}`
  )
}

/**
 * What the caller gets from a carried statement: pg answers a simple query
 * of several statements with one result per statement; the first is ours.
 */
export function carriedResult<R>(result: PgQueryResult<R> | PgQueryResult<R>[]): PgQueryResult<R> {
  if (!Array.isArray(result)) return result
  const theirs = result.slice(1)
  return (theirs.length === 1 ? theirs[0] : theirs) as PgQueryResult<R>
}

/**
 * Whether `error` ended a carried statement at its deadline as the server
 * saw it: its statement_timeout fired (the carried one is the only one in
 * force while it runs), or, carried on the server's clock, it was refused
 * because its deadline had passed before it started.
 */
export function isCarriedDeadline(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown }
  if (typeof message !== 'string') return false
  return (code === '57014' && message.includes('statement timeout')) || (code === '22023' && REFUSED.test(message))
}
