import type { IncomingMessage, ServerResponse } from 'node:http'
import {
  governNodeRequest,
  resolveGovernedRequestOptions,
  type GovernedRequest,
  type GovernedRequestOptions,
} from './governed-request.js'
import { governorHttpOutcome, writeGovernorOutcome } from './governor-outcome.js'

/**
 * A node:http handler that runs under governance; it gets the governed request
 * as a third argument.
 *
 * @example
 * ```ts
 * const handler: GovernedNodeHandler = async (req, res, governed) => {
 *   res.end(`budget ${governed.timeoutMs} ms`)
 * }
 * ```
 */
export type GovernedNodeHandler<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse> = (
  req: Req,
  res: Res,
  governed: GovernedRequest,
) => unknown

/**
 * Options of {@link governedHandler}: the route's policy plus what to do with
 * errors that are not ours.
 *
 * @example
 * ```ts
 * const options: GovernedHandlerOptions = {
 *   defaultTimeoutMs: 1_000,
 *   maxTimeoutMs: 5_000,
 *   criticality: 'critical',
 *   onError: (error, req, res) => { logger.error(error); res.writeHead(500).end() },
 * }
 * ```
 */
export interface GovernedHandlerOptions<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse>
  extends GovernedRequestOptions {
  /**
   * Called for an error the handler threw that is not ours to answer (see
   * {@link governorHttpOutcome}). Default: log it with `console.error` and
   * answer 500 with a JSON body (or destroy the response when headers were sent).
   */
  readonly onError?: ((error: unknown, req: Req, res: Res) => unknown) | undefined
}

const INTERNAL_ERROR_BODY = JSON.stringify({ error: { code: 'INTERNAL_ERROR', message: 'internal server error' } })

/**
 * Wraps a node:http handler: reads `X-Request-Timeout` (400 or the default when
 * invalid, by `onInvalidTimeout`), runs the handler inside the request's query
 * context, aborts its queries when the client disconnects, and answers our
 * errors: `DEADLINE_EXCEEDED` 504, `LOAD_SHED` 503 with `Retry-After`, nothing
 * when the client is gone (reported to `onClientGone` as 499). The returned
 * listener never rejects, so a failing handler cannot crash the process.
 *
 * Options are checked here, once; a bad option throws {@link InvalidOptionError}.
 *
 * @example
 * ```ts
 * import http from 'node:http'
 * import { governedHandler } from 'pg-governor'
 *
 * const report = governedHandler({ defaultTimeoutMs: 5_000, maxTimeoutMs: 20_000, criticality: 'sheddable' }, async (req, res) => {
 *   const rows = await db.selectFrom('sales').selectAll().execute()
 *   res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(rows))
 * })
 * http.createServer((req, res) => (req.url === '/report' ? report(req, res) : res.writeHead(404).end())).listen(3000)
 * ```
 */
export function governedHandler<Req extends IncomingMessage = IncomingMessage, Res extends ServerResponse = ServerResponse>(
  options: GovernedHandlerOptions<Req, Res>,
  handler: GovernedNodeHandler<Req, Res>,
): (req: Req, res: Res) => Promise<void> {
  const resolved = resolveGovernedRequestOptions(options)
  const { onError } = options
  if (typeof handler !== 'function') throw new TypeError('governedHandler: handler must be a function')
  return async (req, res) => {
    let governed: GovernedRequest
    try {
      governed = governNodeRequest(req, res, resolved)
    } catch (error) {
      const outcome = governorHttpOutcome(error, { clientGone: false })
      if (outcome) writeGovernorOutcome(res, outcome)
      else await answerOther(error, req, res, onError)
      return
    }
    try {
      await governed.run(() => handler(req, res, governed))
    } catch (error) {
      const outcome = governorHttpOutcome(error, { clientGone: governed.clientGone })
      if (outcome) writeGovernorOutcome(res, outcome)
      else await answerOther(error, req, res, onError)
    }
  }
}

async function answerOther<Req extends IncomingMessage, Res extends ServerResponse>(
  error: unknown,
  req: Req,
  res: Res,
  onError: ((error: unknown, req: Req, res: Res) => unknown) | undefined,
): Promise<void> {
  if (onError) {
    try {
      await onError(error, req, res)
      return
    } catch (secondary) {
      console.error('pg-governor: onError threw', secondary)
    }
  } else {
    console.error(error)
  }
  if (res.writableEnded || res.destroyed) return
  if (res.headersSent) {
    res.destroy()
    return
  }
  res.writeHead(500, { 'content-type': 'application/json; charset=utf-8', 'content-length': String(Buffer.byteLength(INTERNAL_ERROR_BODY)) })
  res.end(INTERNAL_ERROR_BODY)
}
