import type { PgClient, PgQueryResult } from './pg-types.js'

type PgCallback<R> = (error: Error | null | undefined, result: PgQueryResult<R>) => void

/** The messages of pg's wire connection a prefix needs (pg's `Connection`, undocumented). */
interface PgWire {
  parse(message: { readonly text: string; readonly name: string; readonly types: readonly unknown[] }): void
  bind(message: { readonly portal: string; readonly statement: string; readonly values: readonly unknown[] }): void
  execute(message: { readonly portal: string; readonly rows: number }): void
}

/** What of pg's `Query` (`Client.Query`, undocumented but public since pg 1.x) we extend. */
interface PgQuery {
  submit(connection: unknown): unknown
  prepare(connection: PgWire): void
  handleRowDescription(message: unknown): void
  handleDataRow(message: unknown): void
  handleCommandComplete(message: unknown, connection: unknown): void
}

type PgQueryClass = new (text: string, values: unknown[], callback: PgCallback<unknown>) => PgQuery

/** A pg submittable: what `client.query()` accepts besides text. */
export interface CarriedQuery {
  submit(connection: unknown): unknown
}

const carriedClasses = new WeakMap<PgQueryClass, new (prefixes: readonly string[], text: string, values: unknown[], callback: PgCallback<unknown>) => PgQuery>()

/**
 * pg's own extended-protocol query, with `prefixes` (statements without
 * parameters and with no result the caller wants, such as `set local ...`)
 * sent before it as Parse/Bind/Execute each, all before the statement's one
 * Sync and in the same write: one round trip, and one implicit transaction
 * in which the prefixes' SET LOCALs apply to the statement and end with it.
 * Until the prefixes' CommandCompletes have come, their rows are dropped;
 * everything after (the statement's result, or an error of either, and the
 * ReadyForQuery) is pg's own handling.
 *
 * A subclass of the client's own `Query` class (so that the user's `pg` is
 * the one that runs), made once per class. Undefined when the client has
 * none, as pg-native has not: the statement is then sent uncarried.
 *
 * @example
 * ```ts
 * const query = carriedQuery(client, ['set local statement_timeout = 300'], 'select pg_sleep($1)', [5], callback)
 * if (query) client.query(query)
 * ```
 */
export function carriedQuery<R>(client: PgClient, prefixes: readonly string[], text: string, values: ReadonlyArray<unknown>, callback: PgCallback<R>): CarriedQuery | undefined {
  const Query = queryClassOf(client)
  if (!Query) return undefined
  let Carried = carriedClasses.get(Query)
  if (!Carried) {
    Carried = carriedClassOf(Query)
    carriedClasses.set(Query, Carried)
  }
  return new Carried(prefixes, text, values.slice(), callback as PgCallback<unknown>)
}

/** Whether {@link carriedQuery} can extend this client's queries. */
export function canCarryQueries(client: PgClient): boolean {
  return queryClassOf(client) !== undefined
}

/** What {@link queryClassOf} found, by client class: asked for every carried statement, worked out once. */
const queryClasses = new WeakMap<object, PgQueryClass | null>()

function queryClassOf(client: PgClient): PgQueryClass | undefined {
  const Client = client.constructor as object | undefined
  if (!Client) return undefined
  let found = queryClasses.get(Client)
  if (found === undefined) {
    found = extendableQueryClass(Client) ?? null
    queryClasses.set(Client, found)
  }
  return found ?? undefined
}

function extendableQueryClass(Client: object): PgQueryClass | undefined {
  const Query = (Client as { Query?: unknown }).Query
  if (typeof Query !== 'function') return undefined
  const prototype = (Query as { prototype?: Partial<PgQuery> }).prototype
  const extendable = ['submit', 'prepare', 'handleRowDescription', 'handleDataRow', 'handleCommandComplete'] as const
  return prototype && extendable.every((name) => typeof prototype[name] === 'function') ? (Query as PgQueryClass) : undefined
}

function carriedClassOf(Query: PgQueryClass): new (prefixes: readonly string[], text: string, values: unknown[], callback: PgCallback<unknown>) => PgQuery {
  return class CarriedQuery extends Query {
    readonly #prefixes: readonly string[]
    /** Prefixes whose CommandComplete has not come yet. */
    #pending: number

    constructor(prefixes: readonly string[], text: string, values: unknown[], callback: PgCallback<unknown>) {
      super(text, values, callback)
      this.#prefixes = prefixes
      this.#pending = prefixes.length
    }

    // pg corks the socket around prepare(), so the prefixes and the statement leave in one write.
    override prepare(connection: PgWire): void {
      for (const text of this.#prefixes) {
        connection.parse({ text, name: '', types: [] })
        connection.bind({ portal: '', statement: '', values: [] })
        connection.execute({ portal: '', rows: 0 })
      }
      super.prepare(connection)
    }

    override handleRowDescription(message: unknown): void {
      if (this.#pending === 0) super.handleRowDescription(message)
    }

    override handleDataRow(message: unknown): void {
      if (this.#pending === 0) super.handleDataRow(message)
    }

    override handleCommandComplete(message: unknown, connection: unknown): void {
      if (this.#pending > 0) this.#pending--
      else super.handleCommandComplete(message, connection)
    }
  }
}
