import { now } from '../context/monotonic-clock.js'
import type { Canceller, CancelOutcome } from './canceller.js'
import type { SessionStrategy } from './session-strategy.js'
import type { InFlight } from './statement-run.js'
import { isQueryCanceled } from './statement-outcome.js'

/** How long the cancel is repeated at most. */
const CANCEL_REPEAT_FOR_MS = 5_000

/** Who is cancelled, and how: what the cancel procedure needs of its session. */
export interface CancelSubject {
  readonly pid: number
  readonly secretKey: number | null | undefined
  readonly canceller: Canceller
  readonly strategy: SessionStrategy
  /** The session was discarded meanwhile: repeating is pointless, it will be destroyed. */
  isDiscarded(): boolean
}

/**
 * Sends the cancel, and sends it again while the statement runs on. A cancel
 * that reaches the backend before the statement does (it was just sent) is
 * dropped by the server, PgBouncer drops one for a client still queued for a
 * server connection, and a function can catch query_canceled. Resolves with
 * the outcome that decides the session's fate once the statement has ended
 * and no cancel is on its way any more, so that none can meet the next
 * statement.
 *
 * @example
 * ```ts
 * const outcome = await cancelUntilEnded({ pid, secretKey, canceller, strategy, isDiscarded: () => false }, inFlight)
 * ```
 */
export async function cancelUntilEnded(subject: CancelSubject, inFlight: InFlight): Promise<CancelOutcome> {
  const { pid, secretKey, canceller, strategy } = subject
  let outcome = await strategy.cancel(canceller, pid, secretKey)
  let ended = false
  const whenEnded = inFlight.whenEnded().then(() => {
    ended = true
  })
  const giveUpAt = now() + CANCEL_REPEAT_FOR_MS
  const { firstMs, maxMs } = strategy.cancelAgainAfter
  for (let delayMs = firstMs; ; delayMs = Math.min(delayMs * 2, maxMs)) {
    await endedOrElapsed(whenEnded, delayMs)
    if (ended || now() >= giveUpAt || subject.isDiscarded()) return outcome
    // A repeat that failed or may arrive late makes the whole cancel so.
    const again = await strategy.cancel(canceller, pid, secretKey).catch(
      (error: unknown): CancelOutcome => ({ method: 'protocol', confirmed: false, durationMs: 0, fallbackReason: `a repeated cancel failed: ${String(error)}`, mayArriveLate: true }),
    )
    if (!again.confirmed && (outcome.confirmed || again.mayArriveLate === true)) outcome = again
  }
}

/**
 * Why a session must not be reused after its cancel, or undefined when it may
 * be. An unconfirmed cancel may still be on its way and must never meet the
 * next statement: one that may arrive late (a control query left unanswered
 * behind a partition), even when the statement ended with a cancel; or a
 * protocol cancel, unless the statement ended with it.
 *
 * @example
 * ```ts
 * const reason = reasonToDiscard('cancel', { status: 'fulfilled', value: outcome }, endError)
 * if (reason) session.discard(reason)
 * ```
 */
export function reasonToDiscard(method: 'cancel' | 'terminate', delivered: PromiseSettledResult<CancelOutcome>, endError: unknown): string | undefined {
  if (delivered.status === 'rejected') return `cancel failed: ${String(delivered.reason)}`
  if (method === 'terminate') return 'session killed'
  const outcome = delivered.value
  if (!outcome.confirmed && (outcome.mayArriveLate === true || !isQueryCanceled(endError))) {
    return `unconfirmed cancel (${outcome.fallbackReason ?? outcome.method})`
  }
  return undefined
}

/** Resolves when `ended` does or after `ms`, whichever is first, leaving no timer behind. */
function endedOrElapsed(ended: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const elapsed = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, ms)
    timer.unref()
  })
  return Promise.race([ended, elapsed]).finally(() => clearTimeout(timer))
}
