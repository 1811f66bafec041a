import type { CompiledQuery, ControlConnectionProvider, DatabaseConnection, QueryResult } from 'kysely'
import type { Governor } from '../governor/governor.js'
import type { Lease } from '../governor/lease.js'
import { currentQueryContext } from '../context/query-context.js'
import { rerunRead } from '../retry/read-retry.js'
import { isKyselyWrite } from './kysely-write.js'
import type { PgPoolClient, PgQueryResult } from '../session/pg-types.js'

// Set by the class's static block: the driver reads a connection's lease without a public field.
let leaseOf: (connection: GovernedConnection) => Lease
let governorOf: (connection: GovernedConnection) => Governor | undefined

/**
 * What Kysely holds while it uses a connection: one {@link Lease} of the
 * governor, translated to Kysely's `DatabaseConnection`. Every statement is
 * governed by the session behind it.
 *
 * @example
 * ```ts
 * await db.connection().execute(async (conn) => {
 *   // Kysely hands out GovernedConnection instances; their statements are governed like any other.
 *   await sql`listen orders`.execute(conn)
 * })
 * ```
 */
export class GovernedConnection implements DatabaseConnection {
  /** Replaced only when a read whose connection broke runs again on another one (`retry: { reads: true }`). */
  #lease: Lease
  readonly #governor: Governor | undefined

  constructor(lease: Lease, governor?: Governor) {
    this.#lease = lease
    this.#governor = governor
  }

  static {
    leaseOf = (connection) => connection.#lease
    governorOf = (connection) => connection.#governor
  }

  /** The server process id of this connection. */
  get pid(): number | undefined {
    return this.#lease.session.pid
  }

  /** The pg client, for advanced use (LISTEN, COPY). Do not release it yourself. */
  get client(): PgPoolClient {
    return this.#lease.session.client
  }

  executeQuery<R>(compiledQuery: CompiledQuery): Promise<QueryResult<R>> {
    const { sql, parameters, queryId } = compiledQuery
    const running = this.#lease.session.executeAs<R, QueryResult<R>>(toQueryResult, sql, parameters, queryId?.queryId)
    // Only work whose caller said its statements are reads may run again after its connection broke; the rest pays no promise for it.
    const governor = this.#governor
    if (!governor?.retries.readsOptedIn(currentQueryContext())) return running
    return running.catch((error: unknown) =>
      rerunRead(error, this.#lease, governor, isKyselyWrite(compiledQuery), (lease) => (this.#lease = lease), (lease) =>
        lease.session.executeAs<R, QueryResult<R>>(toQueryResult, sql, parameters, queryId?.queryId),
      ),
    )
  }

  async *streamQuery<R>(compiledQuery: CompiledQuery, chunkSize: number): AsyncIterableIterator<QueryResult<R>> {
    for await (const rows of this.#lease.session.stream<R>(compiledQuery.sql, compiledQuery.parameters, chunkSize, compiledQuery.queryId?.queryId)) {
      yield { rows }
    }
  }

  /** Kysely's 'cancel query' strategy. */
  cancelQuery(_controlConnectionProvider: ControlConnectionProvider): Promise<void> {
    return this.#lease.session.cancelCurrent('cancel')
  }

  /** Kysely's 'kill session' strategy: the connection is destroyed afterwards. */
  killSession(_controlConnectionProvider: ControlConnectionProvider): Promise<void> {
    return this.#lease.session.cancelCurrent('terminate')
  }

  /** The pid is known from the startup message; nothing to collect. */
  async collectSessionInfo(): Promise<void> {}
}

/** @internal The governor behind a connection of ours (for `retryTransaction`'s events); undefined for any other connection. */
export function governorOfConnection(connection: DatabaseConnection): Governor | undefined {
  return connection instanceof GovernedConnection ? governorOf(connection) : undefined
}

/** @internal The lease behind a connection, for the driver that made it. */
export function leaseOfConnection(connection: DatabaseConnection): Lease {
  if (connection instanceof GovernedConnection) return leaseOf(connection)
  throw new TypeError('GovernedDriver was given a connection it did not create')
}

function toQueryResult<R>(result: PgQueryResult<R>): QueryResult<R> {
  const { command, rowCount, rows } = result
  if (command === 'ROLLBACK' || command === 'COMMIT') {
    return { rows: [{ command } as R] }
  }
  return {
    numAffectedRows:
      command === 'INSERT' || command === 'UPDATE' || command === 'DELETE' || command === 'MERGE' ? BigInt(rowCount ?? 0) : undefined,
    rows: rows ?? [],
  }
}
