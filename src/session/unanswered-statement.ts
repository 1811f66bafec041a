import type { StatementTimeoutValue } from './statement-timeout-cache.js'

/**
 * A backend that may still be running a statement after its connection was
 * lost: what the governor needs to hold that connection's permit until the
 * server surely no longer runs it (see src/governor/lost-backend-hold.ts).
 */
export interface LostBackend {
  /** The backend's process id. */
  readonly pid: number
  /** When the session was made (monotonic ms): the backend started before, a backend that reuses its pid after. */
  readonly bornAt: number
  /** By when (monotonic ms) the server's statement_timeout stops the statement at the latest; Infinity when no timeout is known. */
  readonly stopsBy: number
}

/**
 * Whether the server answered the last statement a session sent: a statement
 * that ended with an answer (a result or a server error) left its backend
 * idle, and an idle backend ends as soon as the connection's close reaches
 * it. One that ended with a client-side error (the connection failed, was
 * closed or destroyed) may still run at the server, until its
 * statement_timeout, even after the close has arrived: the server notices
 * a closed client only when it next writes or reads.
 *
 * @example
 * ```ts
 * const mark = new UnansweredStatement(now())
 * mark.sent(now())
 * mark.ended(new Error('Connection terminated unexpectedly'))
 * mark.lostBackend(pid, 2_000) // { pid, bornAt, stopsBy: sentAt + 2000 }
 * ```
 */
export class UnansweredStatement {
  readonly #bornAt: number
  /** When the statement on the wire was sent; undefined when the last one was answered. */
  #sentAt: number | undefined

  constructor(bornAt: number) {
    this.#bornAt = bornAt
  }

  /** A statement went on the wire at `at`. One field write: this runs for every statement. */
  sent(at: number): void {
    this.#sentAt = at
  }

  /** The statement ended, with `error` (undefined when it succeeded). */
  ended(error: unknown): void {
    if (error === undefined || isServerAnswer(error)) this.#sentAt = undefined
  }

  /**
   * The backend `pid` if the last statement was not answered by the server;
   * else undefined. `statementTimeout` is the one in force for that
   * statement: read when asked, since nothing else runs on the session (so
   * nothing changes it) while a statement is unanswered.
   */
  lostBackend(pid: number | undefined, statementTimeout: StatementTimeoutValue): LostBackend | undefined {
    const sentAt = this.#sentAt
    if (sentAt === undefined || pid === undefined) return undefined
    return { pid, bornAt: this.#bornAt, stopsBy: typeof statementTimeout === 'number' && statementTimeout > 0 ? sentAt + statementTimeout : Infinity }
  }
}

/** An error the server sent (pg's DatabaseError: a SQLSTATE and a severity), as opposed to one of the client or the socket. */
function isServerAnswer(error: unknown): boolean {
  const fields = error as { code?: unknown; severity?: unknown } | null
  return typeof fields?.code === 'string' && typeof fields.severity === 'string'
}
