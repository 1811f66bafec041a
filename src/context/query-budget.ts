import { criticalityRank, type Criticality } from './criticality.js'
import { now } from './monotonic-clock.js'
import type { PolicyRegistry } from './policy-registry.js'
import { currentQueryContext, type QueryContext } from './query-context.js'
import { errorForStop } from '../errors/stop-error.js'

/** What one wait or one statement may spend, from the ambient context and its domain's policy. */
export interface QueryBudget {
  readonly context: QueryContext | undefined
  /** When the budget started (monotonic ms). */
  readonly startedAt: number
  /** Monotonic deadline, Infinity for none. */
  readonly deadline: number
  /**
   * `deadline - startedAt`, computed without the round trip through a sum: a
   * 30 000 ms policy must map to the 30 s step every time, not to 60 s when
   * floating point makes it 30 000.000000004.
   */
  readonly remainingMs: number
  readonly criticality: Criticality
  readonly domain: string | undefined
}

/** The budget of work starting now: the earlier of the context's deadline and the policy's timeout. */
export function currentBudget(policies: PolicyRegistry): QueryBudget {
  const context = currentQueryContext()
  const startedAt = now()
  const domain = context?.domain
  const policy = policies.resolve(domain)
  const criticality = context?.criticality ?? policy.criticality
  const policyRemaining = policy.timeoutMs ?? Infinity
  if (context && context.deadline - startedAt < policyRemaining) {
    return { context, startedAt, deadline: context.deadline, remainingMs: context.deadline - startedAt, criticality, domain }
  }
  return { context, startedAt, deadline: startedAt + policyRemaining, remainingMs: policyRemaining, criticality, domain }
}

/** Criticality rank of the calling code, without computing a whole budget. */
export function currentRank(policies: PolicyRegistry): number {
  const context = currentQueryContext()
  return criticalityRank(context?.criticality ?? policies.resolve(context?.domain).criticality)
}

/**
 * Why work with this budget must not start (a signal already aborted, or the
 * budget already spent), or `undefined` when it may.
 */
export function refusalToStart(budget: QueryBudget, signal?: AbortSignal): Error | undefined {
  const aborted = budget.context?.abortedSignal() ?? (signal?.aborted ? signal : undefined)
  if (aborted) return errorForStop({ kind: 'abort', reason: aborted.reason }, { phase: 'before_start', budgetMs: 0, waitedMs: 0, ranMs: 0 })
  if (budget.remainingMs <= 0) return errorForStop({ kind: 'deadline' }, { phase: 'before_start', budgetMs: 0, waitedMs: 0, ranMs: 0 })
  return undefined
}

/** The same budget (deadline, criticality, context) as seen from a later instant, after part of it was spent waiting. */
export function budgetFrom(budget: QueryBudget, at: number): QueryBudget {
  return { ...budget, startedAt: at, remainingMs: budget.deadline - at }
}
