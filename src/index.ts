export { GovernedPostgresDialect } from './dialect/governed-postgres-dialect.js'
export type { GovernedPostgresDialectConfig } from './dialect/governed-postgres-dialect-config.js'
export { GovernedDriver } from './dialect/governed-driver.js'
export { GovernedConnection } from './dialect/governed-connection.js'
export type { PoolStats } from './governor/pool-stats.js'
export { Governor } from './governor/governor.js'
export type { GovernorParts, ControlConnectionOptions } from './governor/governor-parts.js'
export { resolveGovernorParts, type GovernorOptions } from './governor/governor-options.js'
export { Lease } from './governor/lease.js'
export { GovernedSession, type SessionEnd, type SessionServices, type CancelReason } from './session/governed-session.js'
export { StatementTimeoutLadder, DEFAULT_STATEMENT_TIMEOUT_LADDER_MS } from './session/statement-timeout-ladder.js'
export { WARM_CONNECTION_DEFAULTS, type WarmConnectionsOptions } from './governor/warm-connections.js'
export { FLEET_DEFAULTS, DEFAULT_SATURATION_INTERVAL_MS, type FleetOptions, type SaturationOptions } from './governor/fleet-options.js'
export { sizeFleet, type ServerLimitsEvent, type SlotsLimitedBy } from './governor/server-limits.js'
export { isCapacityRefusal } from './admission/capacity-ceiling.js'
export type { CancelMethod, CancelOutcome } from './session/canceller.js'
export { POOLER_MODES, sessionStrategyFor, type PoolerMode, type PoolerOption, type SessionStrategy } from './session/session-strategy.js'
export type { PgPool, PgPoolClient, PgClient, PgCursorConstructor, PgClientConstructor } from './session/pg-types.js'
export { withQueryContext, currentQueryContext, QueryContext } from './context/query-context.js'
export type { QueryContextOptions } from './context/query-context.js'
export { CRITICALITIES, DEFAULT_CRITICALITY, type Criticality } from './context/criticality.js'
export { PolicyRegistry, DEFAULT_TIMEOUT_MS, type QueryPolicy, type ResolvedPolicy } from './context/policy-registry.js'
export { GovernorError, type GovernorErrorCode } from './errors/governor-error.js'
export { DeadlineExceededError } from './errors/deadline-exceeded-error.js'
export { QueryCanceledError } from './errors/query-canceled-error.js'
export { InvalidOptionError } from './errors/invalid-option-error.js'
export type { QueryPhase } from './errors/query-phase.js'
export { GovernorEvents } from './telemetry/governor-events.js'
export type {
  GovernorEventMap,
  GovernorListener,
  QueryEvent,
  QueryOutcome,
  CancelEvent,
  StatementTimeoutEvent,
} from './telemetry/governor-events.js'
export { LoadShedError, type ShedReason } from './errors/load-shed-error.js'
export type { AdmissionOptions } from './admission/admission-policy.js'
export { DEFAULT_UTILISATION_THRESHOLDS } from './admission/admission-policy.js'
export type { CircuitBreakerOptions, CircuitState } from './admission/circuit-breaker.js'
export type { ShedEvent, LeakEvent, CapacityEvent, SaturationEvent } from './telemetry/governor-events.js'
export { governedHandler, type GovernedHandlerOptions, type GovernedNodeHandler } from './http/node-http.js'
export {
  governNodeRequest,
  governWebRequest,
  governedRequestOf,
  resolveGovernedRequestOptions,
  type GovernedRequest,
  type GovernedRequestOptions,
  type ResolvedGovernedRequestOptions,
  type ClientGoneEvent,
} from './http/governed-request.js'
export {
  governorHttpOutcome,
  governorOutcomeResponse,
  writeGovernorOutcome,
  clientGoneFrom,
  findGovernorError,
  retryAfterSeconds,
  type GovernorErrorBody,
  type GovernorHttpOutcome,
} from './http/governor-outcome.js'
export {
  REQUEST_TIMEOUT_HEADER,
  MAX_REQUEST_TIMEOUT_HEADER_LENGTH,
  InvalidRequestTimeoutError,
  parseRequestTimeoutHeader,
  resolveRequestTimeout,
  resolveRequestTimeoutOptions,
  resolveRoutePolicy,
  type InvalidRequestTimeoutReason,
  type InvalidTimeoutAction,
  type RequestTimeoutOptions,
  type ResolvedRequestTimeoutOptions,
  type ResolvedRequestTimeout,
  type RoutePolicyOptions,
  type ResolvedRoutePolicy,
} from './http/request-timeout.js'
export { createMetricsHandler, renderMetrics, metricsResponse, type MetricsRegistry, type MetricsResponse, type MetricsHandlerOptions } from './http/metrics-endpoint.js'
export { attachLogger, type GovernorLogger, type LoggingOptions } from './telemetry/logging.js'
export type { RetryOptions } from './retry/retry-options.js'
export type { RetryBudgetOptions } from './retry/retry-budget.js'
export type { RetryEvent } from './retry/connect-retries.js'
export type { RetryReason, RetrySafety } from './retry/retry-policy.js'
export { attemptsOf } from './retry/retry-attempts.js'
export { retryTransaction, type RetryTransactionOptions } from './dialect/retry-transaction.js'
export type { QueryRetryOptions } from './retry/query-retry-options.js'
