import { now } from '../context/monotonic-clock.js'
import type { GovernorEvents } from '../telemetry/governor-events.js'
import type { PgClient } from './pg-types.js'
import type { InFlight } from './statement-run.js'

/**
 * Stops a statement that carries its deadline (SessionStrategy.carry) by
 * closing its connection at the deadline, and resolves once pg has seen the
 * statement end. The server stops such a statement by itself if it runs, so
 * no cancel is needed; but PgBouncer may still hold it in its queue, where a
 * cancel is dropped and from where it would start once a server connection
 * frees up. Closing the socket (not `end()`: a Terminate message would be
 * read after the queued statement) makes PgBouncer drop a queued statement
 * unrun; a running one stops at its statement_timeout, and PgBouncer closes
 * its server connection. The caller marks the session discarded first.
 *
 * Returns undefined, having done nothing, when pg exposes no socket to close.
 *
 * @example
 * ```ts
 * const closed = closeAtDeadline(client, inFlight, events, (serverError) => keepAsCause(stopped, serverError))
 * ```
 */
export function closeAtDeadline(client: PgClient, inFlight: InFlight, events: GovernorEvents, serverEnded: (error: unknown) => void): Promise<void> | undefined {
  const stream = client.connection?.stream
  if (!stream) return undefined
  const startedAt = now()
  const pid = client.processID ?? 0
  stream.destroy()
  return inFlight.whenEnded().then((endError) => {
    serverEnded(endError)
    if (events.has('cancel')) {
      events.emit('cancel', { pid, reason: 'deadline', outcome: { method: 'close', confirmed: false, durationMs: now() - startedAt }, error: undefined, destroyed: true })
    }
  })
}
