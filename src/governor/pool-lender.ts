import type { AdmissionGate, AdmissionTicket } from '../admission/admission-gate.js'
import { isCapacityRefusal } from '../admission/capacity-ceiling.js'
import { isConnectionFailure, type CircuitBreaker } from '../admission/circuit-breaker.js'
import { BudgetRace } from '../context/budget-race.js'
import { now } from '../context/monotonic-clock.js'
import { GovernorError } from '../errors/governor-error.js'
import { errorForStop } from '../errors/stop-error.js'
import type { PgPool, PgPoolClient } from '../session/pg-types.js'
import type { GovernorEvents } from '../telemetry/governor-events.js'

/** Turns of a caller's acquire that may wait out refusals for capacity before the refusal reaches it. */
const MAX_CAPACITY_ATTEMPTS = 100

/**
 * The governor's way into pg-pool: a connect bounded by the caller's budget,
 * and what each connect tells the rest. A new session proves room on the
 * server (the capacity ceiling may rise) and a working server (the breaker);
 * a refusal for capacity caps the ceiling at the connections this pool has
 * opened, which it counts itself (pg-pool's `totalCount` also counts connects
 * still under way); a connection failure counts for the breaker.
 *
 * @example
 * ```ts
 * const lender = new PoolLender(pool, gate, breaker, events, () => !closed)
 * const client = await lender.lendWithin(ticket)
 * ```
 */
export class PoolLender {
  readonly #pool: PgPool
  readonly #gate: AdmissionGate
  readonly #breaker: CircuitBreaker
  readonly #events: GovernorEvents
  readonly #isOpen: () => boolean
  readonly #counted = new WeakSet<object>()
  #open = 0

  /** `isOpen`: whether the governor still takes work (a client that arrives after it closed goes straight back). */
  constructor(pool: PgPool, gate: AdmissionGate, breaker: CircuitBreaker, events: GovernorEvents, isOpen: () => boolean) {
    this.#pool = pool
    this.#gate = gate
    this.#breaker = breaker
    this.#events = events
    this.#isOpen = isOpen
    // pg-pool closed a client (idle timeout, error): when the fleet does not fit, that slot is left to the others.
    ;(pool as { on?(event: 'remove', listener: (client: object) => void): unknown }).on?.('remove', (client) => {
      if (!this.#counted.delete(client)) return
      this.#open--
      gate.gaveBack(this.#open)
    })
  }

  /** Connections this pool has opened and pg-pool has not closed. */
  get open(): number {
    return this.#open
  }

  /**
   * pg-pool's connect, bounded by the budget: opening a connection can take
   * long (or forever, with a blackholed server and pg-pool's default of no
   * connect timeout), and even an idle client can mean a wait when callers
   * arrive together. A client that arrives after its caller gave up goes
   * straight back; a failed connect returns the permit.
   */
  lendWithin(ticket: AdmissionTicket): Promise<PgPoolClient> {
    const gate = this.#gate
    const pool = this.#pool
    // The permit stays taken until pg-pool's connect has settled, so that pg-pool never has more out than we count.
    const startedAt = this.#breaker.attemptStarted()
    const connecting = pool.connect().then(
      (client) => {
        this.#breaker.recordSuccess()
        const fresh = !this.#counted.has(client)
        if (fresh) {
          this.#counted.add(client)
          this.#open++
        }
        // A new session proves room on the server (an idle one lent proves nothing); connects still under way may yet be refused.
        if (fresh && gate.connected(this.#open)) {
          this.#reportCapacity('raised', undefined)
        }
        if (this.#isOpen()) return client
        client.release()
        gate.abandon()
        throw new GovernorError('POOL_CLOSED', 'the pool was closed while the connection was opened')
      },
      (error: unknown) => {
        if (isCapacityRefusal(error)) {
          const wasCapped = gate.capped
          gate.capacityRefused(this.#open)
          this.#reportCapacity('refused', error, wasCapped)
        }
        gate.abandon()
        if (isConnectionFailure(error)) this.#breaker.recordFailure(startedAt)
        throw error
      },
    )
    if (ticket.deadline === Infinity && !ticket.context?.signals.length && !ticket.signal) return connecting
    return new BudgetRace(connecting, ticket, (cause) => {
      connecting.then(
        (client) => {
          client.release()
          gate.abandon()
        },
        () => {},
      )
      return errorForStop(cause, { phase: 'waiting', budgetMs: ticket.deadline - ticket.startedAt, waitedMs: now() - ticket.startedAt, ranMs: 0 })
    }).promise
  }

  /**
   * Whether a caller refused for capacity (53300) waits for a connection
   * instead: a full server is not a failing one. It goes back to the gate's
   * queue (critical first) for a connection this pool holds or for the next
   * probe upward, within its budget. The refusal reaches the caller only when
   * the pool holds no connection and the caller has no deadline (nothing
   * would end the wait).
   */
  waitsOutRefusal(error: unknown, ticket: AdmissionTicket, attempt: number): boolean {
    if (!isCapacityRefusal(error) || !this.#isOpen() || attempt >= MAX_CAPACITY_ATTEMPTS) return false
    return (this.#pool.totalCount ?? 0) > 0 || ticket.deadline < Infinity
  }

  #reportCapacity(change: 'refused' | 'raised', error: unknown, wasCapped = true): void {
    const events = this.#events
    if (events.has('capacity')) events.emit('capacity', { change, ceiling: this.#gate.ceiling, max: this.#gate.max, wasCapped, error })
  }
}
