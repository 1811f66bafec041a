import { now } from '../context/monotonic-clock.js'
import { withTimeout } from '../context/with-timeout.js'
import type { PgClientConstructor, PgStandaloneClient } from './pg-types.js'
import { sendProtocolCancel, type CancelTarget } from './protocol-cancel.js'

/**
 * How a cancel was delivered: `backend` is `pg_cancel_backend` on the control
 * connection (confirmed), `protocol` a CancelRequest (unconfirmed; the fallback
 * on a direct connection, and the only method behind PgBouncer, where
 * `fallbackReason` is then absent), `kill` is `pg_terminate_backend` on the
 * control connection, `close` our connection to PgBouncer closed at the
 * deadline instead of a cancel, for a statement that carries its own
 * statement_timeout (transaction pooling; the connection is destroyed).
 *
 * @example
 * ```ts
 * dialect.events.on('cancel', (event) => console.log(event.outcome?.method)) // 'backend' | 'protocol' | 'kill' | 'close'
 * ```
 */
export type CancelMethod = 'backend' | 'protocol' | 'kill' | 'close'

/**
 * What happened to one cancel.
 *
 * @example
 * ```ts
 * dialect.events.on('cancel', ({ outcome }) => { if (outcome && !outcome.confirmed) console.log(outcome.fallbackReason) })
 * ```
 */
export interface CancelOutcome {
  readonly method: CancelMethod
  /**
   * True when the server has acted on the signal before we reuse the
   * connection: `pg_cancel_backend`/`pg_terminate_backend` returned. A
   * protocol cancel is never confirmed, so a connection cancelled that way is
   * only reused when the query itself ended with the cancel.
   */
  readonly confirmed: boolean
  readonly durationMs: number
  /** Why the control connection was not used or did not answer, if so. */
  readonly fallbackReason?: string
  /**
   * The signal may still reach the server later: a control query given up on
   * unanswered (behind a partition it is delivered after the heal), or a
   * repeated cancel that failed. A session whose cancel may arrive late is
   * never reused.
   */
  readonly mayArriveLate?: boolean
}

/**
 * How long a control connection may stay silent (every batch given up on
 * unanswered) before it is replaced: a partition shorter than this never
 * shows the server a second control connection at its heal.
 */
function silentPatienceMs(controlTimeoutMs: number): number {
  return Math.max(5_000, 10 * controlTimeoutMs)
}

/** The control query did not answer within its limit: it may still be on its way. */
class UnansweredControlQuery extends Error {}

export interface CancellerOptions {
  /** Makes the control connection; `pg.Client` with the pool's options by default. */
  readonly createClient: () => PgStandaloneClient
  /** Where protocol CancelRequests go. */
  readonly target: CancelTarget
  /** How long a control query may take before we fall back to a protocol cancel. */
  readonly controlTimeoutMs: number
  /** After the control connection fails to open, how long to go straight to the fallback. */
  readonly reconnectDelayMs: number
}

/**
 * Cancels backends over one dedicated, long-lived control connection, opened
 * at start so that it is there when the server is at max_connections. All
 * cancels share it (pg queues them on the one client). When it cannot be had,
 * falls back to the protocol CancelRequest, which needs no slot.
 */
export class Canceller {
  readonly #options: CancellerOptions
  #client: Promise<PgStandaloneClient> | undefined
  readonly #pending: { readonly pid: number; readonly kill: boolean; readonly resolve: () => void; readonly reject: (error: Error) => void }[] = []
  #flushing = false
  /** The control connection has not answered since `since` (a batch given up on unanswered); cleared by an answer or a new connection. */
  #silent: { readonly client: Promise<PgStandaloneClient>; readonly raw: PgStandaloneClient; readonly since: number } | undefined
  /** The pg client behind the current opening (its connect may still be under way). */
  #raw: PgStandaloneClient | undefined
  #unavailableUntil = 0
  #lastFailure = ''
  #ended = false

  constructor(options: CancellerOptions) {
    this.#options = options
  }

  /** Opens the control connection in the background; failures are retried on demand. */
  start(): void {
    this.#control().catch(() => {})
  }

  /** Cancels whatever `pid` is running; `secretKey` is for the protocol fallback. */
  cancel(pid: number, secretKey: number | null | undefined): Promise<CancelOutcome> {
    return this.#signal('backend', pid, secretKey)
  }

  /**
   * Sends a protocol CancelRequest only, never `pg_cancel_backend`: behind a
   * pooler the pid is the pooler's, not a backend's, and only the pooler can
   * route the request. Unconfirmed by nature; resolves once the peer has
   * closed the request's socket.
   */
  async protocolCancel(pid: number, secretKey: number | null | undefined): Promise<CancelOutcome> {
    const startedAt = now()
    if (secretKey === null || secretKey === undefined) throw new Error(`cannot cancel ${pid}: the connection has no secret key for a protocol cancel`)
    await sendProtocolCancel(this.#options.target, pid, secretKey, this.#options.controlTimeoutMs)
    return { method: 'protocol', confirmed: false, durationMs: now() - startedAt }
  }

  /** Terminates the session `pid` (Kysely's 'kill session'). */
  terminate(pid: number, secretKey: number | null | undefined): Promise<CancelOutcome> {
    return this.#signal('kill', pid, secretKey)
  }

  /**
   * Runs one short read-only statement on the control connection (the
   * fleet's server-limits check and saturation samples, issue 22), bounded by
   * the control timeout. pg queues it on the one client, so a cancel batch
   * waits behind it at most one such statement.
   */
  async query<R>(sql: string, parameters: readonly unknown[] = []): Promise<R[]> {
    if (this.#ended) throw new Error('the control connection is closed')
    const limitMs = this.#options.controlTimeoutMs
    const result = await withTimeout(
      this.#control().then((client) => client.query<R>(sql, parameters)),
      limitMs,
      () => new Error(`no answer within ${limitMs} ms`),
    )
    return result.rows
  }

  async end(): Promise<void> {
    this.#ended = true
    const client = this.#client
    this.#client = undefined
    const kept = this.#silent
    const silent = kept && kept.client === client ? kept.raw : undefined
    this.#silent = undefined
    // A silent connection kept may never finish its connect: end it directly (pg destroys a connecting socket), and wait no longer than a control query.
    if (silent) await withTimeout(silent.end(), this.#options.controlTimeoutMs, () => new Error('the control connection did not close')).catch(() => {})
    else if (client) await client.then((c) => c.end()).catch(() => {})
  }

  async #signal(method: 'backend' | 'kill', pid: number, secretKey: number | null | undefined): Promise<CancelOutcome> {
    const startedAt = now()
    let fallbackReason: string
    let mayArriveLate = false
    if (this.#ended) {
      fallbackReason = 'dialect destroyed'
    } else if (startedAt < this.#unavailableUntil) {
      fallbackReason = `control connection unavailable: ${this.#lastFailure}`
    } else {
      try {
        await new Promise<void>((resolve, reject) => {
          this.#pending.push({ pid, kill: method === 'kill', resolve, reject })
          if (!this.#flushing) void this.#flush()
        })
        return { method, confirmed: true, durationMs: now() - startedAt }
      } catch (error) {
        fallbackReason = `control connection failed: ${error instanceof Error ? error.message : String(error)}`
        mayArriveLate = error instanceof UnansweredControlQuery
      }
    }
    if (secretKey === null || secretKey === undefined) {
      throw new Error(`cannot cancel backend ${pid}: ${fallbackReason}, and the connection has no secret key for a protocol cancel`)
    }
    await sendProtocolCancel(this.#options.target, pid, secretKey, this.#options.controlTimeoutMs)
    return { method: 'protocol', confirmed: false, durationMs: now() - startedAt, fallbackReason, mayArriveLate }
  }

  /**
   * Sends every cancel waiting at this moment in one statement: a storm of
   * aborts costs one round trip per batch, not one per query, and the control
   * client never has two queries outstanding.
   */
  async #flush(): Promise<void> {
    this.#flushing = true
    while (this.#pending.length > 0) {
      const batch = this.#pending.splice(0)
      const startedAt = now()
      const cancelPids = batch.filter((request) => !request.kill).map((request) => request.pid)
      const killPids = batch.filter((request) => request.kill).map((request) => request.pid)
      const opening = this.#control()
      try {
        // Opening the connection counts against the limit too: a blackholed server must not stall every cancel.
        await withTimeout(
          opening.then((client) =>
            client.query(
              'select pg_cancel_backend(pid) from unnest($1::int[]) as pid union all select pg_terminate_backend(pid) from unnest($2::int[]) as pid',
              [cancelPids, killPids],
            ),
          ),
          this.#options.controlTimeoutMs,
          () => new UnansweredControlQuery(`no answer within ${this.#options.controlTimeoutMs} ms`),
        )
        if (this.#silent?.client === opening) this.#silent = undefined
        for (const request of batch) request.resolve()
      } catch (error) {
        for (const request of batch) request.reject(error instanceof Error ? error : new Error(String(error)))
        // A control connection that failed is not trusted again; one that only did not answer in time is
        // kept a while: behind a partition a new one's startup is held too and delivered at the heal beside
        // the old one, and the server would count two control connections (issue 12).
        const raw = this.#raw
        const silent = this.#silent?.client === opening ? this.#silent : raw && this.#client === opening ? { client: opening, raw, since: startedAt } : undefined
        this.#silent = silent
        if (!silent || !(error instanceof UnansweredControlQuery) || now() - silent.since >= silentPatienceMs(this.#options.controlTimeoutMs)) {
          this.#drop(opening)
          void opening.then((client) => client.end()).catch(() => {})
        }
      }
    }
    this.#flushing = false
  }

  #control(): Promise<PgStandaloneClient> {
    if (this.#client) return this.#client
    const client = this.#options.createClient()
    this.#raw = client
    const opening = (async () => {
      client.on('error', () => this.#drop(opening))
      await client.connect()
      client.unref?.()
      return client
    })()
    this.#client = opening
    opening.then(
      () => {
        if (this.#ended) void client.end().catch(() => {})
      },
      (error: unknown) => {
        this.#lastFailure = error instanceof Error ? error.message : String(error)
        this.#unavailableUntil = now() + this.#options.reconnectDelayMs
        this.#drop(opening)
      },
    )
    return opening
  }

  #drop(client: Promise<PgStandaloneClient>): void {
    if (this.#silent?.client === client) this.#silent = undefined
    if (this.#client === client) this.#client = undefined
  }
}

/**
 * Builds the control connection's client from the pool's own options. With
 * overrides (for example a role with pg_signal_backend), the pool's
 * connection string is first resolved into fields, because pg lets a
 * connection string win over fields given beside it.
 */
export function controlClientFactory(Client: PgClientConstructor, poolOptions: object, overrides: object | undefined): () => PgStandaloneClient {
  const applicationName = (poolOptions as { application_name?: unknown }).application_name
  const base: Record<string, unknown> = {
    ...poolOptions,
    // pg-pool keeps `password` non-enumerable, so the spread misses it.
    password: (poolOptions as { password?: unknown }).password,
    application_name: `${typeof applicationName === 'string' ? `${applicationName} ` : ''}(pg-governor control)`.slice(0, 63),
  }
  if (overrides && 'connectionString' in base && !('connectionString' in overrides)) {
    const resolved = new Client(base) as PgStandaloneClient & { user?: string; database?: string; password?: unknown; ssl?: unknown }
    delete base['connectionString']
    Object.assign(base, { host: resolved.host, port: resolved.port, user: resolved.user, database: resolved.database, password: resolved.password, ssl: resolved.ssl })
  }
  return () => new Client({ ...base, ...overrides })
}

