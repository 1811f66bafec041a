import { now } from '../context/monotonic-clock.js'
import type { PgQueryResult } from './pg-types.js'

/**
 * Statements that may run inside an implicit transaction: plain DML.
 * Anything else (VACUUM, CREATE INDEX CONCURRENTLY, a caller's own BEGIN or
 * SET) is sent as it is.
 */
const CARRIABLE = /^\s*(?:select|with|insert|update|delete|values|table|merge)\b/i

/**
 * How often the server checks, while a carried statement runs, that its
 * client is still there (`client_connection_check_interval`, PostgreSQL 14+).
 * At the deadline the session closes its connection to PgBouncer, which then
 * closes the server connection; without the check the backend would notice
 * only when it next writes, that is at its statement_timeout, which counts
 * from when the statement left PgBouncer's queue.
 */
export const CLOSE_CHECK_MS = 10

/** How a pool's statements carry their deadline (chosen once, by the `pooler` option). */
export interface CarrierSettings {
  /** The server works the time left out from the deadline on the wall clock as the statement starts. */
  readonly onServerClock: boolean
  /** `client_connection_check_interval` for the statement, or undefined for none (a server that refuses it). */
  readonly closeCheckMs: number | undefined
}

/**
 * A statement with its deadline in front of it, on the same round trip and in
 * the same implicit transaction, so that the SET LOCALs end with it:
 * - `simple`: a statement without parameters, as one simple query of several
 *   statements (pg answers with one result each; the first `prefixCount` are ours);
 * - `extended`: a statement with parameters, which pg sends by the extended
 *   protocol (one statement per Parse): each prefix goes as its own
 *   Parse/Bind/Execute before the statement's, and all before one Sync
 *   (src/session/carried-query.ts).
 */
export type CarriedStatement =
  | { readonly kind: 'simple'; readonly text: string; readonly prefixCount: number }
  | { readonly kind: 'extended'; readonly prefixes: readonly string[] }

/**
 * The statement with its deadline carried to the server, or undefined when it
 * cannot be carried:
 *
 *     set local statement_timeout = <ms left>; set local client_connection_check_interval = 10; <statement>
 *
 * (with parameters, the same settings by one `select set_config(...)`).
 * Statements in one simple query, or between two Syncs of the extended
 * protocol, run in one implicit transaction, so the SET LOCALs end with it:
 * nothing outlives the statement on a server connection that PgBouncer
 * (transaction pooling) hands to another client next, and it costs no round
 * trip. The server then stops the statement by itself when its time is up,
 * however slow a cancel would be (through PgBouncer 1.18 each cancel opens a
 * new server connection, one at a time per pool).
 *
 * The time left is the budget left as the statement is sent, and the server
 * counts from when it gets the statement: one that waited in PgBouncer's
 * queue gets the time it waited on top. The session closes the connection of
 * a carried statement at its deadline, which makes PgBouncer drop one still
 * queued and close the server connection of one running; the close check
 * makes the backend see that within {@link CLOSE_CHECK_MS}. On the server's
 * clock (`onServerClock`) the statement_timeout is worked out as the statement
 * starts instead (see {@link serverClockTimeout}).
 *
 * Not for a statement without parameters that has a `;` of its own (a second
 * statement of the caller's might not run in a transaction block), nor for
 * anything but plain DML.
 *
 * @example
 * ```ts
 * carryDeadline('select pg_sleep(5)', [], now() + 300, { onServerClock: false, closeCheckMs: 10 })
 * // { kind: 'simple', text: 'set local statement_timeout = 300; set local client_connection_check_interval = 10; select pg_sleep(5)', prefixCount: 2 }
 * carryDeadline('select $1::int', [1], now() + 300, { onServerClock: false, closeCheckMs: undefined })
 * // { kind: 'extended', prefixes: ["select set_config('statement_timeout', '300', true)"] }
 * ```
 */
export function carryDeadline(sql: string, parameters: ReadonlyArray<unknown>, deadline: number, settings: CarrierSettings): CarriedStatement | undefined {
  if (deadline === Infinity || !CARRIABLE.test(sql)) return undefined
  if (parameters.length === 0 && sql.includes(';')) return undefined
  const remainingMs = Math.ceil(deadline - now())
  if (parameters.length > 0) return { kind: 'extended', prefixes: [settings.onServerClock ? serverClockTimeout(remainingMs, settings.closeCheckMs) : localSettings(remainingMs, settings.closeCheckMs)] }
  const prefixes = settings.onServerClock ? [serverClockTimeout(remainingMs, settings.closeCheckMs)] : setLocals(remainingMs, settings.closeCheckMs)
  return { kind: 'simple', text: `${prefixes.join('; ')}; ${sql}`, prefixCount: prefixes.length }
}

// The values below are numbers we computed, never caller text; a statement_timeout of 0 would mean none at all.

/** For a simple query, whose statements run in an implicit transaction block: the cheapest, a SET LOCAL each. */
function setLocals(remainingMs: number, closeCheckMs: number | undefined): string[] {
  const timeout = `set local statement_timeout = ${Math.max(1, remainingMs)}`
  return closeCheckMs === undefined ? [timeout] : [timeout, `set local client_connection_check_interval = ${closeCheckMs}`]
}

/**
 * For the extended protocol: the same as one SELECT of set_config(..., true).
 * Between two Syncs the statements share a transaction but not a transaction
 * block, so a SET LOCAL there, though it holds until the Sync, also sends a
 * WARNING ("SET LOCAL can only be used in transaction blocks"): the server
 * logs it and flushes it on its own (measured: 0.06 ms a statement through
 * PgBouncer). set_config warns of nothing.
 */
function localSettings(remainingMs: number, closeCheckMs: number | undefined): string {
  const check = closeCheckMs === undefined ? '' : `, set_config('client_connection_check_interval', '${closeCheckMs}', true)`
  return `select set_config('statement_timeout', '${Math.max(1, remainingMs)}', true)${check}`
}

/** What the server answers to a statement carried on its clock whose deadline had passed when it got there (22023; it does not run). */
const REFUSED = /-1 ms is outside the valid range for parameter "statement_timeout"/

/**
 * The statement_timeout as the server works it out when the statement
 * starts, from the deadline on the wall clock:
 *
 *     select set_config('statement_timeout', <ms left by the server's clock>, true) from ...
 *
 * A statement that waited in PgBouncer's queue gets only what is left of its
 * budget, and one whose deadline passed there is refused before it runs
 * (set_config fails on -1, which aborts the implicit transaction). Never more
 * than the budget left when sent, so a server clock behind ours changes
 * nothing; one ahead by e ms stops statements e ms early (clocks in sync by
 * NTP are assumed). The price is a SELECT to plan and run, not a SET (README,
 * "Behind PgBouncer"). Opt-in:
 * `pooler: { mode: 'pgbouncer-transaction', deadlineOnServerClock: true }`.
 */
function serverClockTimeout(remainingMs: number, closeCheckMs: number | undefined): string {
  const check = closeCheckMs === undefined ? '' : `, set_config('client_connection_check_interval', '${closeCheckMs}', true)`
  // A value of 0 would mean no timeout at all: -1 refuses instead.
  return (
    `select set_config('statement_timeout', (case when ms > 0 then ceil(ms)::int else -1 end)::text, true)${check} ` +
    `from (values (least(${remainingMs}, ${Date.now() + remainingMs} - extract(epoch from clock_timestamp()) * 1000))) as deadline(ms)`
  )
}

/**
 * What the caller gets from a statement carried in a simple query: pg
 * answers one of several statements with one result per statement; the
 * first `prefixCount` are ours.
 */
export function carriedResult<R>(result: PgQueryResult<R> | PgQueryResult<R>[], prefixCount: number): PgQueryResult<R> {
  if (!Array.isArray(result)) return result
  const theirs = result.slice(prefixCount)
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

/**
 * Whether the server refused the close check, and so ran nothing of the
 * statement: on a platform where it cannot tell a closed socket (Windows:
 * 22023, "must be set to 0 on this platform") or before PostgreSQL 14 (42704,
 * unrecognized parameter). The pool then carries statements without it.
 */
export function isCloseCheckRefused(error: unknown): boolean {
  const { code, message } = (error ?? {}) as { code?: unknown; message?: unknown }
  return (code === '22023' || code === '42704') && typeof message === 'string' && message.includes('client_connection_check_interval')
}
