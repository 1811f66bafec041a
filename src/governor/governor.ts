import { AdmissionGate, type AdmissionTicket } from '../admission/admission-gate.js'
import { CapacityCeiling } from '../admission/capacity-ceiling.js'
import { CircuitBreaker } from '../admission/circuit-breaker.js'
import { LoadEstimator } from '../admission/load-estimator.js'
import { criticalityRank } from '../context/criticality.js'
import { now } from '../context/monotonic-clock.js'
import { currentBudget, currentRank, refusalToStart } from '../context/query-budget.js'
import { withQueryContext } from '../context/query-context.js'
import { GovernorError } from '../errors/governor-error.js'
import { InvalidOptionError } from '../errors/invalid-option-error.js'
import { LoadShedError } from '../errors/load-shed-error.js'
import { CheckoutCheck } from '../retry/checkout-check.js'
import { ConnectRetries } from '../retry/connect-retries.js'
import { resolveRetryOptions } from '../retry/retry-options.js'
import { Canceller, controlClientFactory } from '../session/canceller.js'
import { GovernedSession, type SessionEnd, type SessionServices } from '../session/governed-session.js'
import type { PgPool, PgPoolClient } from '../session/pg-types.js'
import { sessionStrategyFor } from '../session/session-strategy.js'
import { FleetWatch } from './fleet-watch.js'
import { LeakDetector } from './leak-detector.js'
import { LostBackendHold, terminateLostBackendsWith } from './lost-backend-hold.js'
import type { GovernorParts } from './governor-parts.js'
import { Lease } from './lease.js'
import { reportRefusal } from './refusal-event.js'
import type { PoolStats } from './pool-stats.js'
import { poolMax } from './pool-max.js'
import { PoolLender } from './pool-lender.js'
import { WarmConnections, type Loan, type WarmConnectionsSettings } from './warm-connections.js'

/** Connect attempts refused for capacity that one caller sits out before it gets the refusal (its budget usually ends the wait first). */

/**
 * The governed core of one pg-pool, with no ORM in it: admission (gate,
 * breaker, load estimator), the warm stack, the canceller and one
 * {@link GovernedSession} per pg client. {@link Governor.acquire} hands out a
 * {@link Lease}; adapters (the Kysely driver, a `pg.Pool` facade) translate
 * their calls into leases and session statements and decide nothing.
 *
 * @example
 * ```ts
 * const governor = new Governor(pool, parts)
 * const lease = await withQueryContext({ timeoutMs: 500 }, () => governor.acquire())
 * try {
 *   await lease.session.execute('select 1', [])
 * } finally {
 *   lease.release()
 * }
 * ```
 */
export class Governor {
  readonly #parts: GovernorParts
  readonly #sessions = new WeakMap<PgPoolClient, GovernedSession>()
  readonly #services: SessionServices
  readonly #estimator = new LoadEstimator()
  readonly #breaker: CircuitBreaker
  readonly #gate: AdmissionGate
  readonly #lender: PoolLender
  readonly #canceller: Canceller
  /** Permits of lost connections whose backend may still run; absent behind a pooler (no control connection, no backend pids). */
  readonly #lost: LostBackendHold | undefined
  readonly #warm: WarmConnections<GovernedSession> | undefined
  readonly #leaks: LeakDetector | undefined
  readonly #onRelease = (lease: Lease): void => this.#released(lease)
  readonly #fleet: FleetWatch | undefined
  readonly #retries: ConnectRetries
  /** Checks sessions that sat idle in pg-pool before use; undefined when `retry.checkIdleAfterMs` is Infinity. */
  readonly #checkout: CheckoutCheck | undefined
  /**
   * Sessions the server has given this pool and not yet taken back: counted
   * when pg-pool lends a client we have not seen, uncounted on pg-pool's
   * 'remove'. pg-pool's totalCount also counts connects under way, which a
   * refusal for capacity must not (they may be refused too).
   */
  #pool: PgPool | undefined

  constructor(pool: PgPool, parts: GovernorParts) {
    this.#parts = parts
    const { events } = parts
    this.#breaker = new CircuitBreaker(parts.circuitBreaker, (state) => {
      if (state === 'closed') this.#estimator.recovered()
      events.emit('circuit', state)
    })
    const retry = parts.retry ?? resolveRetryOptions(undefined)
    this.#retries = new ConnectRetries(retry, (event) => events.emit('retry', event), parts.policies)
    this.#checkout = retry.checkIdleAfterMs < Infinity ? new CheckoutCheck(retry.checkIdleAfterMs) : undefined
    this.#leaks = parts.leakDetectionThresholdMs === undefined ? undefined : new LeakDetector(parts.leakDetectionThresholdMs, events)
    // An unhandled 'error' from an idle client would crash the process (a server restart does that).
    pool.on?.('error', (error) => events.emit('poolError', error))
    const Client = parts.controlClient ?? pool.Client
    if (!Client) throw new InvalidOptionError('controlClient', 'is required when the pool has no `Client` constructor: pass pg.Client')
    const probe = new Client({ ...pool.options })
    const control = parts.controlConnection
    const strategy = sessionStrategyFor(parts.pooler, (probe as { connectionParameters?: object }).connectionParameters)
    this.#canceller = new Canceller({
      createClient: controlClientFactory(Client, pool.options, control?.config),
      target: { host: probe.host ?? 'localhost', port: probe.port ?? 5432 },
      controlTimeoutMs: control?.timeoutMs ?? 1_000,
      reconnectDelayMs: control?.reconnectDelayMs ?? 1_000,
    })
    if (control?.eager !== false && strategy.usesControlConnection) this.#canceller.start()
    // The server's limits are read once, on the control connection, when it opens at start. Not behind a
    // pooler: what bounds its clients is the pooler's own limits, which the server's settings do not show.
    const fleet = parts.fleet
    const readsLimits = fleet !== undefined && strategy.usesControlConnection && fleet.checkServerLimits && control?.eager !== false
    // One of several instances opens its connections one at a time until it knows its share (capacity-ceiling.ts).
    const ceiling = new CapacityCeiling(poolMax(pool), now, readsLimits && fleet.expectedInstances > 1)
    this.#gate = new AdmissionGate(poolMax(pool), parts.admission, this.#estimator, this.#breaker, ceiling, retry.waitForRecovery)
    this.#lost = strategy.usesControlConnection ? new LostBackendHold({ terminate: terminateLostBackendsWith(this.#canceller), free: () => this.#gate.release() }) : undefined
    this.#lender = new PoolLender(pool, this.#gate, this.#breaker, events, () => this.#pool !== undefined)
    this.#fleet =
      fleet && strategy.usesControlConnection && (fleet.saturation || readsLimits)
        ? new FleetWatch(this.#canceller, this.#gate, poolMax(pool), fleet, events, { query: (sql) => this.#queryOnPool(sql) })
        : undefined
    // pg-pool's maxUses counts check-outs; a kept session serves many queries in one, so keeping would stretch it.
    const maxUses = (pool.options as { readonly maxUses?: number }).maxUses
    const keepWarm = parts.warm !== undefined && !(typeof maxUses === 'number' && Number.isFinite(maxUses))
    this.#warm = keepWarm ? new WarmConnections(parts.warm as WarmConnectionsSettings, (session) => this.#returnToPool(session, now())) : undefined
    this.#services = Object.freeze({
      canceller: this.#canceller,
      ladder: parts.ladder,
      policies: parts.policies,
      events,
      cursor: parts.cursor,
      sqlComment: parts.sqlComment === true,
      strategy,
      discarded: (session: GovernedSession, error: Error | undefined) => {
        // A kept session is idle: its failure is what pg-pool reports as 'error' for its own idle clients.
        if (this.#warm?.evict(session) && error) events.emit('poolError', error)
      },
    })
    this.#pool = pool
  }

  get pool(): PgPool | undefined {
    return this.#pool
  }

  get gate(): AdmissionGate {
    return this.#gate
  }

  /** @internal The pool's retry rules and budget, for the adapters' re-run of a read (src/retry/read-retry.ts). */
  get retries(): ConnectRetries {
    return this.#retries
  }

  /**
   * A session and its permit, admitted by the caller's criticality and
   * bounded by its budget on every path: the wait in the queue, the wait for
   * pg-pool, the opening of a new connection. `signal` is a per-call signal
   * outside the ambient context (Kysely's `execute({ signal })`).
   */
  async acquire(signal?: AbortSignal): Promise<Lease> {
    const pool = this.#pool
    if (!pool) throw new GovernorError('POOL_CLOSED', 'the pool has been closed')
    const quick = signal ? undefined : this.tryAcquire()
    if (quick) return quick
    const gate = this.#gate
    const { events } = this.#parts
    const observed = events.has('acquire')
    const startedAt = observed ? now() : 0
    const admitted = gate.tryAcquire() || (!signal && gate.tryAcquireFor(currentRank(this.#parts.policies)))
    const ticket = this.#ticket(signal, admitted)
    let loan: Loan<GovernedSession> | undefined
    let fresh = false
    let createMs: number | undefined
    try {
      if (!admitted) await this.#admit(ticket)
      // A permit freed by a release usually comes with that session, kept warm.
      // `attempt` counts turns of this loop (capacity waits included); `tries` the connects that failed for a retryable reason.
      let tries = 0
      for (let attempt = 1; ; attempt++) {
        loan = this.#warm?.take()
        // A caller admitted as the breaker's probe but served by a kept session proves nothing: let the next one probe.
        if (loan) {
          this.#breaker.releaseProbe()
          break
        }
        const connectStartedAt = now()
        const idleBefore = pool.idleCount ?? 0
        let client: PgPoolClient
        try {
          client = await this.#lender.lendWithin(ticket)
        } catch (error) {
          // Never-sent work (a failed connect) goes again within the deadline and the pool's retry budget, or throws here.
          if (!this.#lender.waitsOutRefusal(error, ticket, attempt)) await this.#retries.afterConnectFailure(error, ticket, ++tries, this.#breaker.state !== 'closed')
          await this.#admit(ticket)
          continue
        }
        if (idleBefore === 0) createMs = now() - connectStartedAt
        let session = this.#sessions.get(client)
        if (!session) {
          session = new GovernedSession(client, this.#services)
          this.#sessions.set(client, session)
          fresh = true
        }
        loan = { session, lentAt: now(), parkedAt: 0 }
        // Long idle in pg-pool, it may have died unseen: found dead before anything was sent, the work goes to another connection.
        if (!fresh && this.#checkout?.due(session, loan.lentAt)) {
          const dead = await this.#checkout.run(session, ticket).catch((stop: unknown) => this.#drop(loan, stop))
          if (dead !== undefined) {
            loan = this.#drop(loan, undefined)
            await this.#retries.afterConnectFailure(dead, ticket, ++tries, this.#breaker.state !== 'closed', 'checkout')
            await this.#admit(ticket)
            continue
          }
        }
        break
      }
    } catch (error) {
      reportRefusal(this.#parts.events, error, ticket)
      throw error
    }
    return this.#lease(loan, fresh, observed, startedAt, createMs, ticket)
  }

  /**
   * The hot path of {@link acquire}, without a promise: a lease at once when
   * a permit is free for the ambient criticality and a kept session waits (no
   * pg-pool, no budget, no timer); else `undefined`, and nothing was taken.
   *
   * @example
   * ```ts
   * const lease = governor.tryAcquire() ?? (await governor.acquire())
   * ```
   */
  tryAcquire(): Lease | undefined {
    const warm = this.#warm
    if (!warm || warm.size === 0 || !this.#pool) return undefined
    const gate = this.#gate
    if (!gate.tryAcquire() && !gate.tryAcquireFor(currentRank(this.#parts.policies))) return undefined
    const observed = this.#parts.events.has('acquire')
    return this.#lease(warm.take() as Loan<GovernedSession>, false, observed, observed ? now() : 0, undefined, undefined)
  }

  /** Hands a session back to pg-pool; its idle time there, for the check at checkout, counts from `at`. */
  #returnToPool(session: GovernedSession, at: number): void {
    this.#checkout?.released(session, at)
    session.returnToPool()
  }

  /** Gives back the permit of a loan whose session was found dead (or whose check was stopped), then throws `stop` if given. */
  #drop(loan: Loan<GovernedSession> | undefined, stop: unknown): undefined {
    if (loan) new Lease(loan, now(), false, this.#onRelease).release()
    if (stop !== undefined) throw stop
    return undefined
  }

  /** Counts of the pool and of the wait queue, at this instant. */
  stats(): PoolStats {
    const gate = this.#gate
    const pool = this.#pool
    const total = pool?.totalCount ?? 0
    const warm = this.#warm?.size ?? 0
    const idle = (pool?.idleCount ?? 0) + warm
    return {
      max: gate.max,
      ceiling: gate.ceiling,
      serverSaturation: gate.serverSaturation,
      total,
      idle,
      warm,
      used: total - idle,
      permits: gate.inUse,
      lostBackends: this.#lost?.size ?? 0,
      waiting: gate.waiting,
      pgPoolWaiting: pool?.waitingCount ?? 0,
      utilisation: gate.utilisation,
      sheddingLevel: gate.sheddingLevel,
      circuit: this.#breaker.state,
      meanUseMs: this.#estimator.meanUseMs,
      meanWaitMs: this.#estimator.meanWaitMs,
    }
  }

  /** Refuses every waiter, hands kept sessions back, closes the control connection and ends the pool. */
  async end(): Promise<void> {
    const pool = this.#pool
    this.#pool = undefined
    this.#leaks?.stop()
    this.#gate.rejectAll(new GovernorError('POOL_CLOSED', 'the pool was closed while the query waited for a connection'))
    this.#fleet?.stop()
    this.#lost?.stop()
    // pg-pool's end() waits for every client it lent; kept ones must go back first.
    this.#warm?.drain()
    await this.#canceller.end()
    if (pool) await pool.end()
  }

  #lease(loan: Loan<GovernedSession>, fresh: boolean, observed: boolean, startedAt: number, createMs: number | undefined, ticket: AdmissionTicket | undefined): Lease {
    this.#retries.succeeded()
    const lease = new Lease(loan, now(), fresh, this.#onRelease)
    this.#leaks?.checkedOut(lease, loan.session.pid)
    if (observed) this.#parts.events.emit('acquire', { waitedMs: lease.checkedOutAt - startedAt, createMs, criticality: ticket?.criticality })
    return lease
  }

  /** The one place a permit comes back: after the session's release rule has run. */
  #released(lease: Lease): void {
    this.#leaks?.returned(lease)
    const end = lease.session.endUse()
    if (typeof end === 'string') this.#settleRelease(lease, end)
    else void end.then((settled) => this.#settleRelease(lease, settled))
  }

  #settleRelease(lease: Lease, end: SessionEnd): void {
    const at = now()
    const warm = this.#warm
    const pool = this.#pool
    // Above the ceiling (borrowed past the fleet's fair share, or the server refused more): the slot goes back to the server.
    const surplus = end === 'clean' && pool !== undefined && this.#gate.capped && this.#lender.open > this.#gate.ceiling
    if (surplus) lease.session.discard('above the connection ceiling: the slot goes back to the server')
    // Kept only when clean, and not while something waits in pg-pool's own queue.
    const kept = !surplus && end === 'clean' && warm !== undefined && pool !== undefined && (pool.waitingCount ?? 0) === 0 && warm.keep(lease.loan, at)
    // A backend that may still run a statement the server never answered keeps the permit: its replacement would be one too many at the server.
    const hold = end === 'broken' ? this.#lost : undefined
    const lost = hold ? lease.session.lostBackend : undefined
    if (!kept) this.#returnToPool(lease.session, at)
    const heldMs = at - lease.checkedOutAt
    if (hold && lost) {
      this.#estimator.recordUse(heldMs)
      hold.hold(lost)
    } else {
      this.#gate.release(heldMs)
    }
    const { events } = this.#parts
    if (events.has('release')) events.emit('release', { heldMs, destroyed: end === 'broken' })
  }

  /** The caller's budget and criticality; refuses work that cannot start, freeing the permit it was given. */
  #ticket(signal: AbortSignal | undefined, holdsPermit: boolean): AdmissionTicket {
    const budget = currentBudget(this.#parts.policies)
    const ticket: AdmissionTicket = {
      rank: criticalityRank(budget.criticality),
      criticality: budget.criticality,
      deadline: budget.deadline,
      startedAt: budget.startedAt,
      context: budget.context,
      signal,
    }
    const refusal = refusalToStart(budget, signal)
    if (refusal) {
      if (holdsPermit) this.#gate.abandon()
      reportRefusal(this.#parts.events, refusal, ticket)
      throw refusal
    }
    return ticket
  }

  async #admit(ticket: AdmissionTicket): Promise<void> {
    try {
      // While the breaker is not closed, the gate holds the caller for the probe's outcome when it can come in time.
      await this.#gate.acquire(ticket)
    } catch (error) {
      const { events } = this.#parts
      if (error instanceof LoadShedError && events.has('shed')) {
        events.emit('shed', {
          criticality: error.criticality,
          domain: ticket.context?.domain,
          reason: error.reason,
          retryAfterMs: error.retryAfterMs,
          utilisation: this.#gate.utilisation,
        })
      }
      throw error
    }
  }

  /**
   * One internal statement on a pool connection, admitted as critical_plus
   * with a short budget (the fleet's limits, when the control connection
   * cannot be had). It shows in the query events like any other.
   */
  async #queryOnPool<R>(sql: string): Promise<R[]> {
    const lease = await withQueryContext({ timeoutMs: 5_000, criticality: 'critical_plus' }, () => this.acquire())
    try {
      return (await withQueryContext({ timeoutMs: 5_000, criticality: 'critical_plus' }, () => lease.session.execute<R>(sql, []))).rows
    } finally {
      lease.release()
    }
  }

}
