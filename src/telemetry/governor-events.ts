import type { RetryEvent } from '../retry/connect-retries.js'
import type { Criticality } from '../context/criticality.js'
import type { CancelOutcome } from '../session/canceller.js'
import type { QueryPhase } from '../errors/query-phase.js'
import type { ShedReason } from '../errors/load-shed-error.js'
import type { CircuitState } from '../admission/circuit-breaker.js'
import type { QueryContext } from '../context/query-context.js'
import type { ServerLimitsEvent } from '../governor/server-limits.js'

/**
 * How a governed query ended.
 *
 * @example
 * ```ts
 * dialect.events.on('query', (event) => { if (event.outcome === 'shed') shed++ })
 * ```
 */
export type QueryOutcome = 'ok' | 'error' | 'deadline_exceeded' | 'canceled' | 'shed'

/**
 * Emitted once per statement, and once per acquisition refused or stopped
 * before a statement ran (`phase` says where it ended).
 *
 * @example
 * ```ts
 * dialect.events.on('query', (event) => histogram.observe({ outcome: event.outcome }, event.ranMs / 1000))
 * ```
 */
export interface QueryEvent {
  readonly outcome: QueryOutcome
  readonly criticality: Criticality
  readonly domain: string | undefined
  readonly phase: QueryPhase
  /** The budget the statement (or wait) started with; Infinity when it had none. */
  readonly budgetMs: number
  /** Waiting for a connection (acquisitions) or for a SET before sending (statements). */
  readonly waitedMs: number
  /** Time on the server as the client saw it. */
  readonly ranMs: number
  readonly pid: number | undefined
  /** SQLSTATE of the error the statement ended with, if any. */
  readonly sqlState: string | undefined
  /** Kysely's query id, when the statement came from Kysely. */
  readonly queryId: string | undefined
  /** The SQL text with its placeholders (never the parameter values). */
  readonly sql: string | undefined
  /** The ambient context, if any (trace ids live there). */
  readonly context: QueryContext | undefined
  /** The error the caller received, if any. */
  readonly error: unknown
}

/**
 * Emitted when a caller got a connection.
 *
 * @example
 * ```ts
 * dialect.events.on('acquire', (event) => waits.observe(event.waitedMs / 1000))
 * ```
 */
export interface AcquireEvent {
  readonly waitedMs: number
  /** Time to open a new connection, when one had to be opened. */
  readonly createMs: number | undefined
  readonly criticality: Criticality | undefined
}

/**
 * Emitted when a connection went back to the pool (or was destroyed).
 *
 * @example
 * ```ts
 * dialect.events.on('release', (event) => uses.observe(event.heldMs / 1000))
 * ```
 */
export interface ReleaseEvent {
  readonly heldMs: number
  readonly destroyed: boolean
}

/**
 * Emitted when a cancel settled, or failed.
 *
 * @example
 * ```ts
 * dialect.events.on('cancel', (event) => { if (event.destroyed) console.warn('connection destroyed after cancel', event.pid) })
 * ```
 */
export interface CancelEvent {
  readonly pid: number
  readonly reason: 'deadline' | 'abort' | 'kysely'
  readonly outcome: CancelOutcome | undefined
  readonly error: unknown
  /** The connection was destroyed rather than reused. */
  readonly destroyed: boolean
}

/**
 * Emitted when a statement_timeout SET was sent.
 *
 * @example
 * ```ts
 * dialect.events.on('statementTimeout', (event) => console.log('SET statement_timeout', event.valueMs, event.local))
 * ```
 */
export interface StatementTimeoutEvent {
  readonly pid: number | undefined
  readonly valueMs: number | 'default'
  readonly local: boolean
}

/**
 * Emitted when admission refused a query.
 *
 * @example
 * ```ts
 * dialect.events.on('shed', (event) => console.log(event.criticality, event.reason, event.retryAfterMs))
 * ```
 */
export interface ShedEvent {
  readonly criticality: Criticality
  readonly domain: string | undefined
  readonly reason: ShedReason
  readonly retryAfterMs: number
  readonly utilisation: number
}

/**
 * Emitted when a connection has been held longer than `leakDetectionThresholdMs`.
 *
 * @example
 * ```ts
 * dialect.events.on('leak', (event) => console.warn(`held ${event.heldMs} ms`, event.stack))
 * ```
 */
export interface LeakEvent {
  readonly pid: number | undefined
  readonly heldMs: number
  /** Where the connection was acquired. */
  readonly stack: string
}

/**
 * Emitted when the server refused this pool a session for capacity (53300:
 * the pool's ceiling drops to the connections it holds; callers wait for
 * those, within their budgets) and when a later connect found room again
 * (the ceiling rises; back at `max` it is no longer capped).
 *
 * @example
 * ```ts
 * dialect.events.on('capacity', (event) => console.log(event.change, `${event.ceiling}/${event.max}`))
 * ```
 */
export interface CapacityEvent {
  readonly change: 'refused' | 'raised'
  /** Connections the pool can count on now. */
  readonly ceiling: number
  /** The pool's max. */
  readonly max: number
  /** Whether the pool was already capped before this change. */
  readonly wasCapped: boolean
  /** The refusal, for `refused`. */
  readonly error: unknown
}

/**
 * Emitted at each saturation sample (`fleet.saturation`).
 *
 * @example
 * ```ts
 * dialect.events.on('saturation', (event) => gauge.set(event.saturation))
 * ```
 */
export interface SaturationEvent {
  /** Busy application backends the sample counted. */
  readonly busy: number
  /** What full means: `fleet.saturation.capacity`, or the usable slots. */
  readonly capacity: number
  /** `busy / capacity`: admission sheds by it as by the pool's utilisation. */
  readonly saturation: number
}

/**
 * The events and their payloads.
 *
 * @example
 * ```ts
 * const onCancel = (event: GovernorEventMap['cancel']) => console.log(event.pid)
 * ```
 */
export interface GovernorEventMap {
  query: QueryEvent
  acquire: AcquireEvent
  release: ReleaseEvent
  cancel: CancelEvent
  statementTimeout: StatementTimeoutEvent
  shed: ShedEvent
  circuit: CircuitState
  leak: LeakEvent
  poolError: Error
  capacity: CapacityEvent
  serverLimits: ServerLimitsEvent
  saturation: SaturationEvent
  retry: RetryEvent
}

/**
 * A typed event listener.
 *
 * @example
 * ```ts
 * const listener: GovernorListener<'shed'> = (event) => console.log(event.reason)
 * ```
 */
export type GovernorListener<K extends keyof GovernorEventMap> = (event: GovernorEventMap[K]) => void

/**
 * Typed listeners for what the dialect does. Listeners run synchronously on the
 * query's path, so keep them cheap; one that throws is ignored.
 *
 * @example
 * ```ts
 * dialect.events.on('cancel', (event) => console.log('cancelled', event.pid, event.outcome?.method))
 * ```
 */
export class GovernorEvents {
  readonly #listeners: { [K in keyof GovernorEventMap]: GovernorListener<K>[] } = {
    query: [],
    acquire: [],
    release: [],
    cancel: [],
    statementTimeout: [],
    shed: [],
    circuit: [],
    leak: [],
    poolError: [],
    capacity: [],
    serverLimits: [],
    saturation: [],
    retry: [],
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof GovernorEventMap>(event: K, listener: GovernorListener<K>): () => void {
    const list = this.#listeners[event] as GovernorListener<K>[]
    list.push(listener)
    return () => {
      const index = list.indexOf(listener)
      if (index >= 0) list.splice(index, 1)
    }
  }

  /** Whether anyone listens, so that callers can skip building the payload. */
  has(event: keyof GovernorEventMap): boolean {
    return this.#listeners[event].length > 0
  }

  emit<K extends keyof GovernorEventMap>(event: K, payload: GovernorEventMap[K]): void {
    for (const listener of this.#listeners[event] as GovernorListener<K>[]) {
      try {
        listener(payload)
      } catch {
        // A listener's failure must not fail the query it observes.
      }
    }
  }
}
