/** A statement_timeout value: milliseconds (0 = off), the server's default, or not known. */
export type StatementTimeoutValue = number | 'default' | 'unknown'

/** What the session would send: milliseconds, or the server's default. */
export type WantedStatementTimeout = number | 'default'

/** libpq's transaction status: idle, in a transaction, in a failed transaction. */
export type TransactionStatus = 'I' | 'T' | 'E'

/** A SET the session must send before its next statement. */
export interface StatementTimeoutChange {
  readonly value: WantedStatementTimeout
  /** SET LOCAL (inside a transaction) rather than a session SET. */
  readonly local: boolean
}

/** How a caller's own SET/RESET of statement_timeout reads. */
export type CallerTimeoutCommand = 'set' | 'set_local' | 'reset'

/** Statements by which a caller sets statement_timeout itself (or resets every setting). */
const SETS_STATEMENT_TIMEOUT = /^\s*(?:set\s+(?:session\s+|local\s+)?statement_timeout\b|reset\s+(?:statement_timeout|all)\b|discard\s+all\b)/i

/**
 * What one session's statement_timeout is, as far as we know, and what a
 * budget wants of it: no I/O, so every rule is unit-tested without a server.
 * The session asks {@link StatementTimeoutCache.change} before each statement
 * and sends a SET only when it answers one; steady traffic sends none.
 *
 * A value SET LOCAL lasts until its transaction ends; a stricter value the
 * caller set itself stays in force over ours.
 *
 * @example
 * ```ts
 * const cache = new StatementTimeoutCache()
 * const change = cache.change(1_000, 'I') // { value: 1000, local: false }
 * if (change) cache.applied(change)
 * cache.change(1_000, 'I') // undefined: already there
 * ```
 */
export class StatementTimeoutCache {
  /** Session value as far as we have set it. */
  #session: StatementTimeoutValue = 'default'
  /** Value SET LOCAL in the current transaction; undefined when none was. */
  #local: StatementTimeoutValue | undefined
  /** statement_timeout the caller set itself (ms, 0 = off), kept when stricter than ours. */
  #callerSession: number | undefined
  #callerLocal: number | undefined

  /** Whether `sql` is a caller's own SET/RESET of statement_timeout, whose result must be learnt with {@link callerSet}. */
  static isCallerCommand(sql: string): boolean {
    return SETS_STATEMENT_TIMEOUT.test(sql)
  }

  /** Which kind of caller command `sql` is (it must pass {@link isCallerCommand}). */
  static callerCommandOf(sql: string): CallerTimeoutCommand {
    if (/^\s*set\s+local\b/i.test(sql)) return 'set_local'
    if (/^\s*(reset|set\s+(session\s+)?statement_timeout\s+to\s+default)\b/i.test(sql) || /^\s*discard\b/i.test(sql)) return 'reset'
    return 'set'
  }

  /**
   * The SET to send for a statement with `remainingMs` of budget, rounded to
   * `step` (the ladder), in a session whose transaction status is `status`;
   * undefined when the session already has the right value, or when a SET
   * would fail anyway (a failed transaction).
   */
  change(stepMs: number | 'default', status: TransactionStatus): StatementTimeoutChange | undefined {
    this.observe(status)
    if (status === 'E') return undefined
    const local = status === 'T'
    let wanted: WantedStatementTimeout = stepMs
    const callers = local ? (this.#callerLocal ?? this.#callerSession) : this.#callerSession
    if (callers !== undefined && callers > 0 && (wanted === 'default' || callers < wanted)) wanted = callers
    const current = local ? (this.#local ?? this.#session) : this.#session
    return current === wanted ? undefined : { value: wanted, local }
  }

  /** The SET of `change` went through. */
  applied(change: StatementTimeoutChange): void {
    if (change.local) this.#local = change.value
    else this.#session = change.value
  }

  /** The caller ran `command` and the server now has `ms` (read back from pg_settings). */
  callerSet(command: CallerTimeoutCommand, ms: number, status: TransactionStatus): void {
    this.observe(status)
    const inTransaction = status === 'T'
    if (command === 'set_local' && inTransaction) {
      this.#callerLocal = ms
      this.#local = ms
    } else if (command === 'reset') {
      this.#callerSession = undefined
      if (inTransaction) this.#local = ms
      else this.#session = 'default'
    } else {
      this.#callerSession = ms
      if (inTransaction) this.#local = ms
      else this.#session = ms
    }
  }

  /** The value the server applies to a statement sent now, as far as we know: the local one inside a transaction. */
  inForce(status: TransactionStatus): StatementTimeoutValue {
    return status === 'I' ? this.#session : (this.#local ?? this.#session)
  }

  /** The session's transaction status as just read: outside a transaction nothing local is left. */
  observe(status: TransactionStatus): void {
    if (status === 'I') {
      this.#local = undefined
      this.#callerLocal = undefined
    }
  }

  /** ROLLBACK TO SAVEPOINT may have undone a SET LOCAL: what the transaction has is no longer known. */
  savepointRolledBack(): void {
    if (this.#local !== undefined) this.#local = 'unknown'
  }
}
