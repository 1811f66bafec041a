/**
 * The parts of node-postgres we use, as structural types, so that the user's
 * own `pg` (a peer dependency) is the one that runs and `@types/pg` is not
 * required of them.
 */

export interface PgQueryResult<R> {
  readonly command: string
  readonly rowCount: number | null
  readonly rows: R[]
}

export interface PgCursor<R> {
  read(rowCount: number): Promise<R[]>
  close(): Promise<void>
}

export type PgCursorConstructor = new <R>(sql: string, parameters: unknown[]) => PgCursor<R>

export interface PgClient {
  query<R>(sql: string, parameters?: ReadonlyArray<unknown>): Promise<PgQueryResult<R>>
  query<R>(cursor: PgCursor<R>): PgCursor<R>
  /** A submittable of ours (src/session/carried-query.ts), which carries its own callback. */
  query(submittable: { submit(connection: unknown): unknown }): unknown
  query<R>(sql: string, parameters: ReadonlyArray<unknown>, callback: (error: Error | null | undefined, result: PgQueryResult<R>) => void): void
  on(event: 'error', listener: (error: Error) => void): unknown
  /** Undocumented in pg but present since pg 1.x; used for cancellation. */
  readonly processID?: number | null
  readonly secretKey?: number | null
  /** Undocumented in pg: the wire connection; its socket is closed without a Terminate message to drop a statement PgBouncer still queues. */
  readonly connection?: { readonly stream?: { destroy(): void } }
  /** pg >= 8.16: 'I' idle, 'T' in a transaction, 'E' in a failed transaction. */
  getTransactionStatus(): string | null
}

export interface PgPoolClient extends PgClient {
  release(destroy?: boolean | Error): void
}

export interface PgStandaloneClient extends PgClient {
  connect(): Promise<unknown>
  end(): Promise<void>
  unref?(): void
  readonly host?: string
  readonly port?: number
}

export type PgClientConstructor = new (config?: object) => PgStandaloneClient

/**
 * A node-postgres `Pool` (or anything shaped like one). Give the dialect a pool
 * of its own: work that bypasses the dialect is not admitted or counted.
 */
export interface PgPool {
  connect(): Promise<PgPoolClient>
  end(): Promise<void>
  readonly options: object
  readonly Client?: PgClientConstructor
  on?(event: 'error', listener: (error: Error, client: unknown) => void): unknown
  readonly totalCount?: number
  readonly idleCount?: number
  readonly waitingCount?: number
}
