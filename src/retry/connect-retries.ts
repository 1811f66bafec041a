import { BudgetRace } from '../context/budget-race.js'
import type { WatchedBudget } from '../context/budget-watch.js'
import { now } from '../context/monotonic-clock.js'
import { errorForStop } from '../errors/stop-error.js'
import { markAttempts } from './retry-attempts.js'
import { RetryBudget } from './retry-budget.js'
import type { RetrySettings } from './retry-options.js'
import { planRetry, type RetryDecision } from './retry-plan.js'
import { classifyFailure, type RetryReason } from './retry-policy.js'
import type { PolicyRegistry } from '../context/policy-registry.js'
import { currentQueryContext, type QueryContext } from '../context/query-context.js'
import { currentBudget } from '../context/query-budget.js'
import { retryScopeOf, type RetryScope } from './query-retry-options.js'

/** A caller's budget as the governor's ticket carries it. */
export interface RetryTicket extends WatchedBudget {
  readonly startedAt: number
}

/**
 * What one retry decision of the acquire path was, for the `retry` event and
 * the `pg_governor_retries_total{reason, outcome}` counter. `retried`: another
 * attempt follows after a backoff; `waited`: the caller waits for the open
 * breaker's probe (`waitForRecovery`); otherwise why no attempt follows
 * (`circuit_open`: the breaker opened and would refuse the retry).
 *
 * @example
 * ```ts
 * dialect.events.on('retry', (event: RetryEvent) => console.log(event.reason, event.outcome, event.attempt))
 * ```
 */
export interface RetryEvent {
  readonly reason: RetryReason
  readonly outcome: 'retried' | 'waited' | 'attempts' | 'budget' | 'deadline' | 'circuit_open'
  /** Attempts made so far, the failed one included. */
  readonly attempt: number
  readonly delayMs: number | undefined
  /** Tokens left in the pool's budget after this failure. */
  readonly budgetTokens: number
}

/**
 * The retries of the governor's acquire path, for work that never reached
 * the server: a connect that failed (57P03 during a restart, a refused or
 * dropped connection). One per pool, with the pool's {@link RetryBudget}.
 * The wait for the breaker's probe itself is the admission gate's (its
 * probe queue); `waitForRecovery` only sends a caller whose connect failed
 * while the breaker is open back to it, rather than failing it.
 *
 * @example
 * ```ts
 * const retries = new ConnectRetries(resolveRetryOptions({}), (event) => events.emit('retry', event))
 * await retries.afterConnectFailure(error, ticket, 1) // resolves after the backoff, or throws `error`
 * ```
 */
export class ConnectRetries {
  readonly #settings: RetrySettings
  readonly #budget: RetryBudget
  readonly #report: ((event: RetryEvent) => void) | undefined
  readonly #policies: PolicyRegistry | undefined

  constructor(settings: RetrySettings, report?: (event: RetryEvent) => void, policies?: PolicyRegistry) {
    this.#settings = settings
    this.#budget = new RetryBudget(settings.budget)
    this.#report = report
    this.#policies = policies
  }

  /** What applies to work of `context`: its `retry`, over its domain's policy's, over the pool's. */
  scopeOf(context: QueryContext | undefined): RetryScope {
    return retryScopeOf(context?.retry, this.#policies?.resolve(context?.domain).retry, this.#settings)
  }

  /**
   * Whether work under `context` said its statements are reads (`reads`, on
   * the context or its domain's policy): {@link scopeOf}'s `reads`, without
   * allocating, since every statement asks.
   */
  readsOptedIn(context: QueryContext | undefined): boolean {
    const own = context?.retry
    if (own === false) return false
    if (own?.reads !== undefined) return own.reads
    const policy = this.#policies?.resolve(context?.domain).retry
    return policy !== undefined && policy !== false && policy.reads === true
  }

  /** The budget of work that starts now under the ambient context: its deadline, or its domain's timeout from now. */
  ticketNow(): RetryTicket {
    if (this.#policies) return currentBudget(this.#policies)
    const context = currentQueryContext()
    return { deadline: context?.deadline ?? Infinity, context, startedAt: now() }
  }

  /**
   * After the `attempts`-th run of a statement failed once sent: resolves
   * once the backoff is over when it may run again on another connection;
   * otherwise throws `error` (marked with the attempts, when more than one).
   * Only a read, on the caller's word (`retry: { reads: true }` on the context
   * or the policy), outside a transaction, whose connection broke or was shut
   * down (08xxx, 57P01, 57P02); never a statement Kysely built as a write.
   */
  async afterStatementFailure(error: unknown, ticket: RetryTicket, attempts: number, site: { readonly inTransaction: boolean; readonly write: boolean }): Promise<void> {
    const scope = this.scopeOf(ticket.context)
    const verdict = classifyFailure(error, { stage: 'statement', readOnly: scope.reads && !site.write, inTransaction: site.inTransaction })
    if (verdict.reason === undefined) throw attempts > 1 ? markAttempts(error, attempts) : error
    const budgetAllows = this.#budget.failed()
    const decision = planRetry({ verdict, optedIn: true, attempts, now: now(), deadline: ticket.deadline, budgetAllows }, this.#settingsFor(scope))
    this.#report?.({ reason: verdict.reason, outcome: decision.retry ? 'retried' : decision.why === 'unsafe' ? 'attempts' : decision.why, attempt: attempts, delayMs: decision.retry ? decision.delayMs : undefined, budgetTokens: this.#budget.tokens })
    if (!decision.retry) throw markAttempts(error, attempts)
    if (decision.delayMs > 0) await sleepWithin(decision.delayMs, ticket)
  }

  #settingsFor(scope: RetryScope): RetrySettings {
    return scope.maxAttempts === this.#settings.maxAttempts ? this.#settings : { ...this.#settings, maxAttempts: scope.maxAttempts }
  }

  get budget(): RetryBudget {
    return this.#budget
  }

  /** Reports a retry decision made elsewhere for this pool's work (`retryTransaction`), as a `retry` event. */
  report(event: RetryEvent): void {
    this.#report?.(event)
  }

  /** A connection was had: the budget gets its share back. */
  succeeded(): void {
    this.#budget.succeeded()
  }

  /**
   * After the `attempts`-th connect failed (or, at `stage` checkout, the
   * session lent was found dead before anything was sent on it): resolves once the backoff is over
   * when another attempt may go; otherwise throws `error`, marked with the
   * attempts made. A deadline or abort during the backoff rejects at once.
   */
  async afterConnectFailure(error: unknown, ticket: RetryTicket, attempts: number, circuitOpen: boolean, stage: 'connect' | 'checkout' = 'connect'): Promise<void> {
    const verdict = classifyFailure(error, { stage })
    if (verdict.safety !== 'always' || verdict.reason === undefined) throw markAttempts(error, attempts)
    const budgetAllows = this.#budget.failed()
    const planned = planRetry({ verdict, optedIn: false, attempts, now: now(), deadline: ticket.deadline, budgetAllows }, this.#settingsFor(this.scopeOf(ticket.context)))
    // An open breaker would refuse the retry at admission: the caller gets its connect error rather than a LOAD_SHED.
    const decision: RetryDecision = planned.retry && circuitOpen && !this.#settings.waitForRecovery ? { retry: false, why: 'circuit_open' } : planned
    // The breaker is open: going back to admission sends nothing, it waits for the breaker's probe (one attempt for all
    // the waiters) while the deadline lasts, even when the budget is empty: the breaker, not this caller, paces the attempts.
    const waits = !decision.retry && decision.why !== 'deadline' && circuitOpen && this.#settings.waitForRecovery && ticket.deadline < Infinity
    this.#report?.({
      reason: verdict.reason,
      outcome: decision.retry ? 'retried' : waits ? 'waited' : decision.why === 'unsafe' ? 'attempts' : decision.why,
      attempt: attempts,
      delayMs: decision.retry ? decision.delayMs : undefined,
      budgetTokens: this.#budget.tokens,
    })
    if (waits) return
    if (!decision.retry) throw markAttempts(error, attempts)
    if (decision.delayMs > 0) await sleepWithin(decision.delayMs, ticket)
  }
}

/** Sleeps `ms`, or rejects at the caller's deadline or abort, whichever comes first. */
function sleepWithin(ms: number, ticket: RetryTicket): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const slept = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms)
  })
  const race = new BudgetRace(slept, ticket, (cause) => {
    clearTimeout(timer)
    return errorForStop(cause, { phase: 'waiting', budgetMs: ticket.deadline - ticket.startedAt, waitedMs: now() - ticket.startedAt, ranMs: 0 })
  })
  return race.promise
}
