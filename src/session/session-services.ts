import type { PolicyRegistry } from '../context/policy-registry.js'
import type { GovernorEvents } from '../telemetry/governor-events.js'
import type { Canceller } from './canceller.js'
import type { GovernedSession } from './governed-session.js'
import type { PgCursorConstructor } from './pg-types.js'
import type { SessionStrategy } from './session-strategy.js'
import type { StatementTimeoutLadder } from './statement-timeout-ladder.js'

/**
 * What every session of one governor shares: the governor builds it once
 * and hands it to each {@link GovernedSession} it makes.
 *
 * @example
 * ```ts
 * const services: SessionServices = { canceller, ladder: new StatementTimeoutLadder(), policies, events, cursor: undefined, sqlComment: false, discarded: () => {} }
 * const session = new GovernedSession(client, services)
 * ```
 */
export interface SessionServices {
  readonly canceller: Canceller
  readonly ladder: StatementTimeoutLadder
  readonly policies: PolicyRegistry
  readonly events: GovernorEvents
  readonly cursor: PgCursorConstructor | undefined
  /** Prefix statements with a sqlcommenter-style comment (criticality, domain, traceparent). */
  readonly sqlComment: boolean
  /** How statement_timeout is carried and cancels are sent, by the pool's mode (direct when absent). */
  readonly strategy?: SessionStrategy | undefined
  /** The session was marked never to be reused; `error` when its connection failed. The governor evicts it if it holds it idle. */
  discarded(session: GovernedSession, error: Error | undefined): void
}

/** Why a stop reaches the server: our deadline, an abort, or Kysely's own inflight-query strategy. */
export type CancelReason = 'deadline' | 'abort' | 'kysely'

/** What a session is fit for once its user is done with it. */
export type SessionEnd = 'clean' | 'broken'

/**
 * How long a rollback may take once its caller has stopped waiting for it
 * (its deadline passed): past this the session is destroyed, which rolls the
 * transaction back on the server as surely, and frees the slot.
 */
export const ROLLBACK_TIMEOUT_MS = 1_000
