import type { DatabaseConnection, Kysely, Transaction } from 'kysely'
import { governorOfConnection } from './governed-connection.js'
import { BudgetRace } from '../context/budget-race.js'
import { now } from '../context/monotonic-clock.js'
import { currentQueryContext, withQueryContext, type QueryContext } from '../context/query-context.js'
import { InvalidOptionError } from '../errors/invalid-option-error.js'
import { errorForStop } from '../errors/stop-error.js'
import { markAttempts } from '../retry/retry-attempts.js'
import { RetryBudget } from '../retry/retry-budget.js'
import { resolveRetryOptions, type RetryOptions, type RetrySettings } from '../retry/retry-options.js'
import { planRetry } from '../retry/retry-plan.js'
import { classifyFailure, type RetryReason } from '../retry/retry-policy.js'

/**
 * Options of {@link retryTransaction}.
 *
 * @example
 * ```ts
 * const options: RetryTransactionOptions = { timeoutMs: 2_000, maxAttempts: 5, isolationLevel: 'serializable' }
 * ```
 */
export interface RetryTransactionOptions extends Pick<RetryOptions, 'maxAttempts' | 'backoff' | 'budget'> {
  /** The isolation level of every attempt. Default `serializable` (where 40001 comes from). */
  readonly isolationLevel?: 'serializable' | 'repeatable read' | 'read committed' | undefined
  /** One deadline for all the attempts, from now; the ambient context's, when shorter, wins. */
  readonly timeoutMs?: number | undefined
  /** Called before each retry (for logs and metrics). */
  readonly onRetry?: ((retry: { readonly reason: RetryReason; readonly attempt: number; readonly delayMs: number; readonly error: unknown }) => void) | undefined
}

/** One budget per database handle, made from the first call's `budget` option: the transactions on one handle share it. */
const budgets = new WeakMap<object, RetryBudget>()

/**
 * Runs `work` in a transaction and, when the transaction loses to a
 * serialization failure (40001) or a deadlock (40P01), runs it again from
 * its start: Postgres rolled the loser back, so nothing of it stayed. Every
 * attempt shares one deadline (the ambient context's, or `timeoutMs`); a
 * retry whose backoff (exponential, full jitter) would end at or after it is
 * not made, and retries come out of a budget per `db` handle (gRPC-style,
 * as the pool's; sized by the first call's `budget` option). Any other error, and an error after the last attempt, is thrown
 * as it is, with `attempts` on it. `work` must be safe to run again: it may
 * run more than once, so no side effects outside the transaction.
 *
 * @example
 * ```ts
 * await retryTransaction(db, async (trx) => {
 *   const { balance } = await trx.selectFrom('account').select('balance').where('id', '=', 1).executeTakeFirstOrThrow()
 *   await trx.updateTable('account').set({ balance: balance - 10 }).where('id', '=', 1).execute()
 * }, { timeoutMs: 2_000 })
 * ```
 */
export async function retryTransaction<DB, T>(db: Kysely<DB>, work: (trx: Transaction<DB>) => Promise<T>, options: RetryTransactionOptions = {}): Promise<T> {
  const { isolationLevel = 'serializable', timeoutMs, onRetry, ...retry } = options
  if (!['serializable', 'repeatable read', 'read committed'].includes(isolationLevel)) {
    throw new InvalidOptionError('isolationLevel', `must be serializable, repeatable read or read committed; got ${String(isolationLevel)}`)
  }
  const settings = resolveRetryOptions({ maxAttempts: 5, ...retry })
  if (timeoutMs !== undefined) return withQueryContext({ timeoutMs }, () => attemptAll(db, work, isolationLevel, settings, onRetry))
  return attemptAll(db, work, isolationLevel, settings, onRetry)
}

async function attemptAll<DB, T>(
  db: Kysely<DB>,
  work: (trx: Transaction<DB>) => Promise<T>,
  isolationLevel: NonNullable<RetryTransactionOptions['isolationLevel']>,
  settings: RetrySettings,
  onRetry: RetryTransactionOptions['onRetry'],
): Promise<T> {
  let budget = budgets.get(db)
  if (!budget) budgets.set(db, (budget = new RetryBudget(settings.budget)))
  const context = currentQueryContext()
  const deadline = context?.deadline ?? Infinity
  const startedAt = now()
  for (let attempts = 1; ; attempts++) {
    // The attempt's connection, to report the retry decision as the pool's `retry` event (and metric).
    let connection: DatabaseConnection | undefined
    try {
      const result = await db
        .transaction()
        .setIsolationLevel(isolationLevel)
        .execute(async (trx) => {
          connection = await trx.getExecutor().provideConnection(async (held) => held)
          return work(trx)
        })
      budget.succeeded()
      return result
    } catch (error) {
      const verdict = classifyFailure(error, { stage: 'transaction' })
      const budgetAllows = verdict.safety !== 'never' && budget.failed()
      const decision = planRetry({ verdict, optedIn: true, attempts, now: now(), deadline, budgetAllows }, settings)
      if (verdict.reason !== undefined && connection) {
        const outcome = decision.retry ? 'retried' : decision.why === 'unsafe' ? 'attempts' : decision.why
        governorOfConnection(connection)?.retries.report({ reason: verdict.reason, outcome, attempt: attempts, delayMs: decision.retry ? decision.delayMs : undefined, budgetTokens: budget.tokens })
      }
      if (!decision.retry || verdict.reason === undefined) throw markAttempts(error, attempts)
      onRetry?.({ reason: verdict.reason, attempt: attempts, delayMs: decision.delayMs, error })
      await sleepWithin(decision.delayMs, deadline, context, startedAt)
    }
  }
}

/** The backoff, ended early by the deadline or an abort of the context (which reject, as a query would). */
function sleepWithin(ms: number, deadline: number, context: QueryContext | undefined, startedAt: number): Promise<void> {
  if (ms <= 0) return Promise.resolve()
  let timer: NodeJS.Timeout | undefined
  const slept = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))
  return new BudgetRace(slept, { deadline, context }, (cause) => {
    clearTimeout(timer)
    return errorForStop(cause, { phase: 'waiting', budgetMs: deadline - startedAt, waitedMs: now() - startedAt, ranMs: 0 })
  }).promise
}
