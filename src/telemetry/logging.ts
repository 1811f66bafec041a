import type { CircuitState } from '../admission/circuit-breaker.js'
import type { GovernorEvents, QueryEvent } from './governor-events.js'
import { traceOf } from '../context/trace-context.js'
import { InvalidOptionError } from '../errors/invalid-option-error.js'

/**
 * The pino methods we call; any pino-compatible logger (pino, a child logger) fits.
 *
 * @example
 * ```ts
 * const logger: GovernorLogger = pino({ level: 'info' })
 * ```
 */
export interface GovernorLogger {
  debug(fields: object, message: string): void
  info(fields: object, message: string): void
  warn(fields: object, message: string): void
  error(fields: object, message: string): void
}

/**
 * Options of the structured logs.
 *
 * @example
 * ```ts
 * const logging: LoggingOptions = { slowQueryMs: 500 }
 * ```
 */
export interface LoggingOptions {
  /** A statement that succeeds but took at least this long is logged as `slow query`. Off by default. */
  readonly slowQueryMs?: number | undefined
}

/** Longest SQL text put in a log line; parameter values are never logged. */
const MAX_SQL_LENGTH = 1_000

/**
 * Writes the dialect's events as structured log lines: deadline exceeded and
 * shed (warn), cancel confirmed (debug) / unconfirmed (info) / failed (error),
 * circuit opened (error, once per outage; each probe is debug) / closed (info),
 * leak suspected (warn), slow query (warn), pool error (error), server full
 * and pool capped (warn) / back at its max (info), server limits (debug; warn
 * when the fleet cannot fit). Fields: queryId, pid, domain, criticality,
 * budgetMs, waitedMs, ranMs, outcome, sqlState, and traceId/spanId when an
 * OpenTelemetry span was active. SQL text is logged with its placeholders;
 * parameter values never are: they can hold secrets.
 *
 * @example
 * ```ts
 * import pino from 'pino'
 * const dialect = new GovernedPostgresDialect({ pool, logger: pino(), logging: { slowQueryMs: 500 } })
 * ```
 */
export function attachLogger(events: GovernorEvents, logger: GovernorLogger, options: LoggingOptions = {}): () => void {
  for (const method of ['debug', 'info', 'warn', 'error'] as const) {
    if (typeof (logger as unknown as Record<string, unknown>)?.[method] !== 'function') {
      throw new InvalidOptionError('logger', `must be a pino-compatible logger with a ${method}() method`)
    }
  }
  const { slowQueryMs } = options
  if (slowQueryMs !== undefined && (!Number.isFinite(slowQueryMs) || slowQueryMs < 0)) {
    throw new InvalidOptionError('logging.slowQueryMs', `must be a non-negative number of milliseconds; got ${String(slowQueryMs)}`)
  }
  let circuit: CircuitState = 'closed'
  const offs = [
    events.on('query', (event) => {
      if (event.outcome === 'deadline_exceeded') logger.warn(queryFields(event, true), 'query deadline exceeded')
      else if (event.outcome === 'canceled') logger.info(queryFields(event, false), 'query canceled')
      else if (event.outcome === 'ok' && slowQueryMs !== undefined && event.ranMs >= slowQueryMs) logger.warn(queryFields(event, true), 'slow query')
    }),
    events.on('shed', (event) =>
      logger.warn(
        { criticality: event.criticality, domain: event.domain, reason: event.reason, retryAfterMs: event.retryAfterMs, utilisation: round(event.utilisation) },
        'query shed',
      ),
    ),
    events.on('cancel', (event) => {
      const fields = {
        pid: event.pid,
        reason: event.reason,
        method: event.outcome?.method,
        confirmed: event.outcome?.confirmed,
        cancelMs: event.outcome ? round(event.outcome.durationMs) : undefined,
        fallbackReason: event.outcome?.fallbackReason,
        destroyed: event.destroyed,
      }
      if (event.outcome === undefined) logger.error({ ...fields, err: event.error }, 'cancel failed')
      else if (event.outcome.confirmed) logger.debug(fields, 'cancel confirmed')
      else logger.info(fields, 'cancel sent, unconfirmed')
    }),
    events.on('circuit', (state) => {
      // While open the breaker probes every 50 ms to 2 s: each probe is a debug line, not another error.
      if (state === 'open' && circuit === 'closed') logger.error({ circuit: state }, 'circuit opened: connections are failing, queries are shed')
      else if (state === 'closed') logger.info({ circuit: state }, 'circuit closed')
      else logger.debug({ circuit: state }, state === 'half_open' ? 'circuit half open: probing' : 'circuit probe failed: still open')
      circuit = state
    }),
    events.on('leak', (event) => logger.warn({ pid: event.pid, heldMs: round(event.heldMs), stack: event.stack }, 'connection leak suspected')),
    events.on('poolError', (error) => logger.error({ err: error }, 'pool error')),
    events.on('capacity', (event) => {
      // A capped pool refuses again at each failed probe: log the changes of state, not every refusal.
      if (event.change === 'refused' && !event.wasCapped) {
        logger.warn({ ceiling: event.ceiling, max: event.max, err: event.error }, 'server full: pool capped at the connections it holds, callers wait for them')
      } else if (event.change === 'raised' && event.ceiling >= event.max) {
        logger.info({ ceiling: event.ceiling, max: event.max }, 'server has room again: pool back at its max')
      }
    }),
    events.on('serverLimits', (event) => {
      const fields = {
        maxConnections: event.maxConnections,
        superuserReservedConnections: event.superuserReservedConnections,
        reservedConnections: event.reservedConnections,
        roleConnectionLimit: event.roleConnectionLimit,
        databaseConnectionLimit: event.databaseConnectionLimit,
        usableSlots: event.usableSlots,
        limitedBy: event.limitedBy,
        poolMax: event.poolMax,
        expectedInstances: event.expectedInstances,
        needed: event.needed,
        suggestedPoolMax: event.suggestedPoolMax,
      }
      if (event.fits) logger.debug(fields, 'server connection limits')
      else {
        logger.warn(
          fields,
          `pool max ${event.poolMax} x ${event.expectedInstances} instances (+1 control connection each) needs ${event.needed} connections; the server has ${event.usableSlots} for this role: set max to ${event.suggestedPoolMax} or fewer`,
        )
      }
    }),
  ]
  return () => {
    for (const off of offs) off()
  }
}

function queryFields(event: QueryEvent, withSql: boolean): object {
  const trace = traceOf(event.context)
  return {
    queryId: event.queryId,
    pid: event.pid,
    domain: event.domain,
    criticality: event.criticality,
    outcome: event.outcome,
    phase: event.phase,
    budgetMs: Number.isFinite(event.budgetMs) ? round(event.budgetMs) : undefined,
    waitedMs: round(event.waitedMs),
    ranMs: round(event.ranMs),
    sqlState: event.sqlState,
    traceId: trace?.traceId,
    spanId: trace?.spanId,
    sql: withSql && event.sql !== undefined ? event.sql.slice(0, MAX_SQL_LENGTH) : undefined,
  }
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10
}
