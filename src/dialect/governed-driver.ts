import {
  AbortedTransactionError,
  createQueryId,
  IdentifierNode,
  RawNode,
  type AbortableOperationOptions,
  type DatabaseConnection,
  type Driver,
  type QueryCompiler,
  type TransactionSettings,
} from 'kysely'
import { AdmissionGate, type AdmissionTicket } from '../admission/admission-gate.js'
import type { ResolvedAdmissionPolicy } from '../admission/admission-policy.js'
import { CircuitBreaker, isConnectionFailure, type CircuitState } from '../admission/circuit-breaker.js'
import { LoadEstimator } from '../admission/load-estimator.js'
import { BudgetRace } from '../context/budget-race.js'
import { criticalityRank, type Criticality } from '../context/criticality.js'
import { LeakDetector } from '../connection/leak-detector.js'
import { LoadShedError } from '../errors/load-shed-error.js'
import type { QueryPhase } from '../errors/query-phase.js'
import { now } from '../context/monotonic-clock.js'
import { currentBudget, currentRank, refusalToStart } from '../context/query-budget.js'
import { PolicyRegistry } from '../context/policy-registry.js'
import { Canceller, controlClientFactory } from '../connection/canceller.js'
import { GovernedConnection, type ConnectionServices } from '../connection/governed-connection.js'
import type { PgClientConstructor, PgPool, PgPoolClient } from '../connection/pg-types.js'
import { StatementTimeoutLadder } from '../connection/statement-timeout-ladder.js'
import { WarmConnections, type WarmConnectionsSettings } from '../connection/warm-connections.js'
import { DeadlineExceededError } from '../errors/deadline-exceeded-error.js'
import { GovernorError } from '../errors/governor-error.js'
import { InvalidOptionError } from '../errors/invalid-option-error.js'
import { QueryCanceledError } from '../errors/query-canceled-error.js'
import { errorForStop } from '../errors/stop-error.js'
import { GovernorEvents } from '../telemetry/governor-events.js'
import type { GovernedPostgresDialectConfig } from './governed-postgres-dialect-config.js'
import { poolMax } from './pool-max.js'

/**
 * A snapshot of the pool.
 *
 * @example
 * ```ts
 * const { used, max, waiting } = dialect.poolStats()
 * ```
 */
export interface PoolStats {
  /** The pool's `max`: connections the dialect lets out at once. */
  readonly max: number
  /** Connections pg-pool holds, idle or checked out. */
  readonly total: number
  /** Connections no query holds: idle in pg-pool, or kept warm by the dialect (`warm`). */
  readonly idle: number
  /** Of `idle`, the connections the dialect keeps for the next query instead of returning them to pg-pool. */
  readonly warm: number
  /** Connections a query holds (`total - idle`). */
  readonly used: number
  /** Admission permits held: checked out, being opened, or draining a cancel. */
  readonly permits: number
  /** Callers in our wait queue. */
  readonly waiting: number
  /** Callers in pg-pool's own queue: stays 0 unless something bypasses the dialect. */
  readonly pgPoolWaiting: number
  /** `(permits + waiting) / max`: what the shedding thresholds compare with. */
  readonly utilisation: number
  /** The most critical level refused by utilisation right now, if any. */
  readonly sheddingLevel: Criticality | undefined
  readonly circuit: CircuitState
  /** Running mean of how long a connection is held, in milliseconds. */
  readonly meanUseMs: number
  /** Running mean of the waits of callers that queued, in milliseconds. */
  readonly meanWaitMs: number
}

/**
 * The Kysely driver behind {@link GovernedPostgresDialect}: admission in front
 * of pg-pool, governed connections, and one canceller per dialect.
 *
 * @example
 * ```ts
 * const driver = new GovernedPostgresDialect({ pool }).createDriver() // Kysely does this for you
 * ```
 */
export class GovernedDriver implements Driver {
  readonly #config: GovernedPostgresDialectConfig
  readonly #policies: PolicyRegistry
  readonly #ladder: StatementTimeoutLadder
  readonly #events: GovernorEvents
  readonly #connections = new WeakMap<PgPoolClient, GovernedConnection>()
  #pool: PgPool | undefined
  #gate: AdmissionGate | undefined
  #services: ConnectionServices | undefined
  #canceller: Canceller | undefined
  #warm: WarmConnections<GovernedConnection> | undefined
  readonly #admission: ResolvedAdmissionPolicy
  readonly #warmSettings: WarmConnectionsSettings | undefined
  readonly #estimator = new LoadEstimator()
  readonly #breaker: CircuitBreaker
  readonly #leaks: LeakDetector | undefined

  constructor(
    config: GovernedPostgresDialectConfig,
    parts: {
      readonly policies: PolicyRegistry
      readonly ladder: StatementTimeoutLadder
      readonly events: GovernorEvents
      readonly admission: ResolvedAdmissionPolicy
      /** Validated `warmConnections`; undefined when keeping is off. */
      readonly warm: WarmConnectionsSettings | undefined
    },
  ) {
    this.#config = config
    this.#policies = parts.policies
    this.#ladder = parts.ladder
    this.#events = parts.events
    this.#admission = parts.admission
    this.#warmSettings = parts.warm
    this.#breaker = new CircuitBreaker(config.circuitBreaker, (state) => this.#events.emit('circuit', state))
    this.#leaks = config.leakDetectionThresholdMs === undefined ? undefined : new LeakDetector(config.leakDetectionThresholdMs, this.#events)
  }

  /** The admission gate, once the driver is initialised. */
  get gate(): AdmissionGate | undefined {
    return this.#gate
  }

  get pool(): PgPool | undefined {
    return this.#pool
  }

  /** Counts of the pool and of our wait queue, at this instant. */
  poolStats(): PoolStats {
    const gate = this.#gate
    const pool = this.#pool
    const total = pool?.totalCount ?? 0
    const warm = this.#warm?.size ?? 0
    const idle = (pool?.idleCount ?? 0) + warm
    return {
      max: gate?.max ?? 0,
      total,
      idle,
      warm,
      used: total - idle,
      permits: gate?.inUse ?? 0,
      waiting: gate?.waiting ?? 0,
      pgPoolWaiting: pool?.waitingCount ?? 0,
      utilisation: gate?.utilisation ?? 0,
      sheddingLevel: gate?.sheddingLevel,
      circuit: this.#breaker.state,
      meanUseMs: this.#estimator.meanUseMs,
      meanWaitMs: this.#estimator.meanWaitMs,
    }
  }

  async init(options?: AbortableOperationOptions): Promise<void> {
    const { pool } = this.#config
    const resolved = typeof pool === 'function' ? await pool(options) : pool
    this.#gate = new AdmissionGate(poolMax(resolved), this.#admission, this.#estimator, this.#breaker)
    // An unhandled 'error' from an idle client would crash the process (a server restart does that).
    resolved.on?.('error', (error) => this.#events.emit('poolError', error))
    const Client = (this.#config.controlClient ?? resolved.Client) as PgClientConstructor | undefined
    if (!Client) {
      throw new InvalidOptionError('controlClient', 'is required when the pool has no `Client` constructor: pass pg.Client')
    }
    const probe = new Client({ ...resolved.options })
    this.#canceller = new Canceller({
      createClient: controlClientFactory(Client, resolved.options, this.#config.controlConnection?.config),
      target: { host: probe.host ?? 'localhost', port: probe.port ?? 5432 },
      controlTimeoutMs: this.#config.controlConnection?.timeoutMs ?? 1_000,
      reconnectDelayMs: this.#config.controlConnection?.reconnectDelayMs ?? 1_000,
    })
    if (this.#config.controlConnection?.eager !== false) this.#canceller.start()
    // pg-pool's maxUses counts check-outs; a kept connection serves many queries in one, so keeping would stretch it.
    const maxUses = (resolved.options as { readonly maxUses?: number }).maxUses
    const warm = this.#warmSettings
    this.#warm = warm && !(typeof maxUses === 'number' && Number.isFinite(maxUses)) ? new WarmConnections(warm) : undefined
    this.#services = Object.freeze({
      warm: this.#warm,
      canceller: this.#canceller,
      ladder: this.#ladder,
      policies: this.#policies,
      events: this.#events,
      cursor: this.#config.cursor,
      sqlComment: this.#config.sqlComment === true,
    })
    this.#pool = resolved
  }

  async acquireConnection(options?: AbortableOperationOptions): Promise<DatabaseConnection> {
    const gate = this.#gate
    const pool = this.#pool
    if (!gate || !pool) throw new GovernorError('POOL_CLOSED', 'driver has already been destroyed')
    const events = this.#events
    const observed = events.has('acquire')
    const startedAt = observed ? now() : 0
    let createMs: number | undefined
    let ticket: AdmissionTicket | undefined
    const admitted = gate.tryAcquire() || (!options?.signal && gate.tryAcquireFor(currentRank(this.#policies)))
    // The hot path: a permit and a warm connection; no pg-pool, no context, no budget, no timer.
    let connection = admitted && !options?.signal ? this.#warm?.take() : undefined
    let lent: PgPoolClient | undefined
    if (!connection && admitted && (pool.idleCount ?? 0) > 0 && !options?.signal) {
      // Next best: a permit and an idle client in pg-pool.
      try {
        lent = await pool.connect()
      } catch (error) {
        this.#connectFailed(gate, error)
        throw error
      }
      this.#breaker.recordSuccess()
    } else if (!connection) {
      ticket = this.#ticket(options, admitted)
      try {
        if (!admitted) await this.#admit(gate, ticket)
        // A permit freed by a release usually comes with that connection, kept warm.
        connection = this.#warm?.take()
        if (!connection) {
          const connectStartedAt = now()
          const idleBefore = pool.idleCount ?? 0
          lent = await this.#connectWithin(pool, gate, ticket)
          if (idleBefore === 0) createMs = now() - connectStartedAt
        }
      } catch (error) {
        this.#reportRefusal(error, ticket)
        throw error
      }
    }
    if (lent) connection = await this.#adopt(lent, gate, options)
    const governed = connection as GovernedConnection
    if (this.#config.onReserveConnection) await this.#guard(governed, () => this.#config.onReserveConnection?.(governed, options))
    governed.checkedOutAt = now()
    if (lent) governed.leasedAt = governed.checkedOutAt
    this.#leaks?.checkedOut(governed, governed.pid)
    if (observed) {
      events.emit('acquire', { waitedMs: governed.checkedOutAt - startedAt, createMs, criticality: ticket?.criticality })
    }
    return governed
  }

  /** The governed connection of a client pg-pool lent us: made (and `onCreateConnection` run) the first time. */
  async #adopt(client: PgPoolClient, gate: AdmissionGate, options: AbortableOperationOptions | undefined): Promise<GovernedConnection> {
    if (!this.#pool) {
      client.release()
      gate.abandon()
      throw new GovernorError('POOL_CLOSED', 'driver has already been destroyed')
    }
    let connection = this.#connections.get(client)
    if (!connection) {
      const created = new GovernedConnection(client, this.#services as ConnectionServices)
      connection = created
      this.#connections.set(client, created)
      if (this.#config.onCreateConnection) await this.#guard(created, () => this.#config.onCreateConnection?.(created, options))
    }
    return connection
  }

  /** A query event for work that never reached a statement: refused, expired or aborted while waiting. */
  #reportRefusal(error: unknown, ticket: AdmissionTicket): void {
    if (!this.#events.has('query')) return
    const outcome =
      error instanceof LoadShedError
        ? 'shed'
        : error instanceof DeadlineExceededError
          ? 'deadline_exceeded'
          : error instanceof QueryCanceledError
            ? 'canceled'
            : 'error'
    const waitedMs = now() - ticket.startedAt
    this.#events.emit('query', {
      outcome,
      criticality: ticket.criticality,
      domain: ticket.context?.domain,
      phase: outcome === 'shed' ? 'before_start' : ((error as { phase?: QueryPhase }).phase ?? 'waiting'),
      budgetMs: ticket.deadline - ticket.startedAt,
      waitedMs,
      ranMs: 0,
      pid: undefined,
      sqlState: undefined,
      queryId: undefined,
      sql: undefined,
      context: ticket.context,
      error,
    })
  }

  /** The caller's budget and criticality; refuses work that cannot start. Frees the permit it was given when it refuses. */
  #ticket(options: AbortableOperationOptions | undefined, holdsPermit: boolean): AdmissionTicket {
    const budget = currentBudget(this.#policies)
    const ticket: AdmissionTicket = {
      rank: criticalityRank(budget.criticality),
      criticality: budget.criticality,
      deadline: budget.deadline,
      startedAt: budget.startedAt,
      context: budget.context,
      signal: options?.signal,
    }
    const refusal = refusalToStart(budget, options?.signal)
    if (refusal) {
      if (holdsPermit) this.#gate?.abandon()
      this.#reportRefusal(refusal, ticket)
      throw refusal
    }
    return ticket
  }


  async #admit(gate: AdmissionGate, ticket: AdmissionTicket): Promise<void> {
    try {
      await gate.acquire(ticket)
    } catch (error) {
      if (error instanceof LoadShedError && this.#events.has('shed')) {
        this.#events.emit('shed', {
          criticality: error.criticality,
          domain: ticket.context?.domain,
          reason: error.reason,
          retryAfterMs: error.retryAfterMs,
          utilisation: gate.utilisation,
        })
      }
      throw error
    }
  }

  /** pg-pool's connect, reporting to the circuit breaker; the permit is returned if it fails. */
  async #connect(pool: PgPool, gate: AdmissionGate): Promise<PgPoolClient> {
    try {
      const client = await pool.connect()
      this.#breaker.recordSuccess()
      return client
    } catch (error) {
      this.#connectFailed(gate, error)
      throw error
    }
  }

  #connectFailed(gate: AdmissionGate, error: unknown): void {
    gate.abandon()
    if (isConnectionFailure(error)) this.#breaker.recordFailure()
  }

  /**
   * Opening a connection can take long (or forever, with a blackholed server
   * and pg-pool's default of no connect timeout): bound it by the budget. A
   * connection that arrives after its caller gave up goes straight back.
   */
  #connectWithin(pool: PgPool, gate: AdmissionGate, ticket: AdmissionTicket): Promise<PgPoolClient> {
    const connecting = this.#connect(pool, gate)
    if (ticket.deadline === Infinity && !ticket.context?.signals.length && !ticket.signal) return connecting
    const race = new BudgetRace(connecting, ticket, (cause) => {
      connecting.then(
        (client) => {
          client.release()
          gate.abandon()
        },
        () => {},
      )
      return errorForStop(cause, { phase: 'waiting', budgetMs: ticket.deadline - ticket.startedAt, waitedMs: now() - ticket.startedAt, ranMs: 0 })
    })
    return race.promise
  }

  async beginTransaction(connection: DatabaseConnection, settings: TransactionSettings): Promise<void> {
    let sql = 'begin'
    if (settings.isolationLevel || settings.accessMode) {
      sql = 'start transaction'
      if (settings.isolationLevel) sql += ` isolation level ${settings.isolationLevel}`
      if (settings.accessMode) sql += ` ${settings.accessMode}`
    }
    const governed = asGoverned(connection)
    await governed.executeControl(sql)
    governed.transactionBoundary('begin')
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    const governed = asGoverned(connection)
    const result = await governed.executeControl('commit')
    governed.transactionBoundary('end')
    // PostgreSQL completes COMMIT with a ROLLBACK tag when an earlier error aborted the transaction.
    if (result.command === 'ROLLBACK') throw new AbortedTransactionError()
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    const governed = asGoverned(connection)
    try {
      await governed.executeControl('rollback')
      governed.transactionBoundary('end')
    } catch (error) {
      governed.discard(`rollback failed: ${String(error)}`)
      throw error
    }
  }

  async savepoint(connection: DatabaseConnection, savepointName: string, compileQuery: QueryCompiler['compileQuery']): Promise<void> {
    await this.#savepointCommand(connection, 'savepoint', savepointName, compileQuery)
  }

  async rollbackToSavepoint(connection: DatabaseConnection, savepointName: string, compileQuery: QueryCompiler['compileQuery']): Promise<void> {
    await this.#savepointCommand(connection, 'rollback to', savepointName, compileQuery)
    asGoverned(connection).transactionBoundary('savepoint-rollback')
  }

  async releaseSavepoint(connection: DatabaseConnection, savepointName: string, compileQuery: QueryCompiler['compileQuery']): Promise<void> {
    await this.#savepointCommand(connection, 'release', savepointName, compileQuery)
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    const governed = asGoverned(connection)
    this.#leaks?.returned(governed)
    governed.release(this)
  }

  /** @internal Keeps a clean released connection warm, unless its lease is over or something waits in pg-pool's own queue. */
  keep(connection: GovernedConnection): boolean {
    const warm = this.#warm
    if (!warm || !this.#pool || (this.#pool.waitingCount ?? 0) > 0) return false
    return warm.keep(connection, now())
  }

  /** @internal The connection is back in the pool (or destroyed): its permit goes to the next caller. */
  connectionReleased(connection: GovernedConnection, destroyed: boolean): void {
    // A connection just kept warm was stamped then; read the clock once per release.
    const heldMs = (connection.parked ? connection.parkedAt : now()) - connection.checkedOutAt
    this.#gate?.release(heldMs)
    if (this.#events.has('release')) this.#events.emit('release', { heldMs, destroyed })
  }

  async destroy(): Promise<void> {
    const pool = this.#pool
    const canceller = this.#canceller
    this.#pool = undefined
    this.#canceller = undefined
    this.#leaks?.stop()
    this.#gate?.rejectAll(new GovernorError('POOL_CLOSED', 'the dialect was destroyed while the query waited for a connection'))
    // pg-pool's end() waits for every client it lent; kept ones must go back first.
    this.#warm?.drain()
    await canceller?.end()
    if (pool) await pool.end()
  }

  async #savepointCommand(
    connection: DatabaseConnection,
    command: 'savepoint' | 'rollback to' | 'release',
    savepointName: string,
    compileQuery: QueryCompiler['compileQuery'],
  ): Promise<void> {
    const compiled = compileQuery(savepointNode(command, savepointName), createQueryId())
    await asGoverned(connection).executeControl(compiled.sql)
  }

  /** A hook that throws must not leak the connection or the permit. */
  async #guard(connection: GovernedConnection, hook: () => Promise<void> | undefined): Promise<void> {
    try {
      await hook()
    } catch (error) {
      const gate = this.#gate
      connection.release({ connectionReleased: () => gate?.abandon() })
      throw error
    }
  }
}

function asGoverned(connection: DatabaseConnection): GovernedConnection {
  if (connection instanceof GovernedConnection) return connection
  throw new TypeError('GovernedDriver was given a connection it did not create')
}

/** The same node Kysely's own (unexported) savepoint parser builds: the name is sanitised as an identifier. */
function savepointNode(command: 'savepoint' | 'rollback to' | 'release', savepointName: string): RawNode {
  return RawNode.createWithChildren([RawNode.createWithSql(`${command} `), IdentifierNode.create(savepointName)])
}
