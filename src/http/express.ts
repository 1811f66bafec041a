import type { ErrorRequestHandler, RequestHandler } from 'express'
import {
  governNodeRequest,
  resolveGovernedRequestOptions,
  type GovernedRequest,
  type GovernedRequestOptions,
} from './governed-request.js'
import { clientGoneFrom, governorHttpOutcome, writeGovernorOutcome } from './governor-outcome.js'

/**
 * Express middleware (Express 4 and 5) that puts each request under
 * governance: reads `X-Request-Timeout` (an invalid value is answered 400 at
 * once, or replaced by the default with `onInvalidTimeout: 'ignore'`), runs the
 * rest of the chain inside the request's query context, and aborts the
 * request's queries when the client disconnects. The governed request is at
 * `res.locals.governor` (and `governedRequestOf(req)`).
 *
 * Mount it per route (or per router, for a domain); add
 * {@link expressGovernorErrorHandler} after your routes to answer our errors.
 * Options are checked here, once; a bad option throws {@link InvalidOptionError}.
 *
 * @example
 * ```ts
 * import express from 'express'
 * import { expressGovernor, expressGovernorErrorHandler } from 'pg-governor/express'
 *
 * const app = express()
 * app.get('/orders/:id', expressGovernor({ defaultTimeoutMs: 800, maxTimeoutMs: 2_000, criticality: 'critical' }), async (req, res) => {
 *   res.json(await db.selectFrom('orders').where('id', '=', req.params.id).selectAll().executeTakeFirst())
 * })
 * app.get('/report', expressGovernor({ defaultTimeoutMs: 5_000, criticality: 'sheddable', domain: 'report' }), reportHandler)
 * app.use(expressGovernorErrorHandler())
 * ```
 */
export function expressGovernor(options: GovernedRequestOptions): RequestHandler {
  const resolved = resolveGovernedRequestOptions(options)
  return (req, res, next) => {
    let governed: GovernedRequest
    try {
      governed = governNodeRequest(req, res, resolved)
    } catch (error) {
      const outcome = governorHttpOutcome(error, { clientGone: false })
      if (outcome) writeGovernorOutcome(res, outcome)
      else next(error)
      return
    }
    res.locals['governor'] = governed
    governed.run(() => next())
  }
}

/**
 * Express error handler that answers our errors: `DEADLINE_EXCEEDED` 504,
 * `LOAD_SHED` 503 with `Retry-After` (seconds, rounded up, at least 1), an
 * invalid `X-Request-Timeout` 400, all with a JSON body; when the client is
 * already gone it writes nothing (the middleware's `onClientGone` saw the 499).
 * Every other error goes on to `next(error)`, as do ours once headers were sent
 * (Express then closes the connection).
 *
 * @example
 * ```ts
 * app.use(expressGovernorErrorHandler())
 * app.use((error, req, res, next) => { logger.error(error); res.status(500).json({ error: 'internal' }) })
 * ```
 */
export function expressGovernorErrorHandler(): ErrorRequestHandler {
  return (error, req, res, next) => {
    const outcome = governorHttpOutcome(error, { clientGone: clientGoneFrom(req, res) })
    if (!outcome) {
      next(error)
      return
    }
    if (outcome.kind === 'client_gone') return
    if (res.headersSent) {
      next(error)
      return
    }
    writeGovernorOutcome(res, outcome)
  }
}
