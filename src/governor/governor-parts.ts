import type { ResolvedAdmissionPolicy } from '../admission/admission-policy.js'
import type { CircuitBreakerOptions } from '../admission/circuit-breaker.js'
import type { PolicyRegistry } from '../context/policy-registry.js'
import type { RetrySettings } from '../retry/retry-options.js'
import type { PgClientConstructor, PgCursorConstructor } from '../session/pg-types.js'
import type { PoolerOption } from '../session/session-strategy.js'
import type { StatementTimeoutLadder } from '../session/statement-timeout-ladder.js'
import type { GovernorEvents } from '../telemetry/governor-events.js'
import type { ResolvedFleetOptions } from './fleet-options.js'
import type { WarmConnectionsSettings } from './warm-connections.js'

/** Everything a governor is built from; validated by whoever builds it (the dialect). */
export interface GovernorParts {
  readonly policies: PolicyRegistry
  readonly ladder: StatementTimeoutLadder
  readonly events: GovernorEvents
  readonly admission: ResolvedAdmissionPolicy
  /** Validated `warmConnections`; undefined when keeping is off. */
  readonly warm: WarmConnectionsSettings | undefined
  readonly circuitBreaker?: CircuitBreakerOptions | undefined
  /** Validated `fleet` options: the server limits check and saturation sampling. */
  readonly fleet?: ResolvedFleetOptions | undefined
  readonly leakDetectionThresholdMs?: number | undefined
  readonly cursor?: PgCursorConstructor | undefined
  readonly sqlComment?: boolean | undefined
  /** What sits between the pool and Postgres; picks the sessions' timeout carrier and cancel (session-strategy.ts). */
  readonly pooler?: PoolerOption | undefined
  /** Makes the control connection; the pool's own `Client` by default. */
  readonly controlClient?: PgClientConstructor | undefined
  readonly controlConnection?: ControlConnectionOptions | undefined
  /** Validated `retry` options; the defaults when absent. */
  readonly retry?: RetrySettings | undefined
}

/**
 * The dedicated connection that sends `pg_cancel_backend`.
 *
 * @example
 * ```ts
 * const controlConnection: ControlConnectionOptions = { config: { user: 'governor_control' }, timeoutMs: 500 }
 * ```
 */
export interface ControlConnectionOptions {
  /** pg Client options merged over the pool's (for example a role with pg_signal_backend). */
  readonly config?: object | undefined
  /** Open it at the first query rather than at the first cancel. Default true. */
  readonly eager?: boolean | undefined
  /** A control query slower than this falls back to a protocol cancel. Default 1000 ms. */
  readonly timeoutMs?: number | undefined
  /** After it failed to open, go straight to the protocol cancel for this long. Default 1000 ms. */
  readonly reconnectDelayMs?: number | undefined
}
