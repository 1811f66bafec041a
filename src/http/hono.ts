import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Context, ErrorHandler, MiddlewareHandler } from 'hono'
import {
  governNodeRequest,
  governWebRequest,
  resolveGovernedRequestOptions,
  type GovernedRequest,
  type GovernedRequestOptions,
} from './governed-request.js'
import { governorHttpOutcome, governorOutcomeResponse } from './governor-outcome.js'

/**
 * The Hono environment the middleware adds to: `c.get('governor')` (or
 * `c.var.governor`) is the request's governance.
 *
 * @example
 * ```ts
 * const app = new Hono<HonoGovernorEnv>()
 * app.get('/budget', honoGovernor({ defaultTimeoutMs: 500 }), (c) => c.json({ ms: c.var.governor.timeoutMs }))
 * ```
 */
export interface HonoGovernorEnv {
  readonly Variables: {
    readonly governor: GovernedRequest
  }
}

/**
 * Hono middleware (Hono 4) that puts requests under governance: reads
 * `X-Request-Timeout` (an invalid value is answered 400 at once, or replaced
 * by the default with `onInvalidTimeout: 'ignore'`), runs the rest of the
 * chain inside the request's query context, aborts the request's queries when
 * the client disconnects, and answers our errors when a handler throws them:
 * 504, 503 with `Retry-After`, nothing for a client that is gone (an empty 499
 * no one reads; `onClientGone` reports it). Other errors are left to `app.onError`.
 *
 * On `@hono/node-server` the disconnect is read from the node response, as
 * in the other adapters; elsewhere (Bun, Deno, workers) from `c.req.raw.signal`.
 * Options are checked here, once; a bad option throws {@link InvalidOptionError}.
 *
 * @example
 * ```ts
 * import { Hono } from 'hono'
 * import { serve } from '@hono/node-server'
 * import { honoGovernor, honoGovernorErrorHandler, type HonoGovernorEnv } from 'pg-governor/hono'
 *
 * const app = new Hono<HonoGovernorEnv>()
 * app.use('/api/*', honoGovernor({ defaultTimeoutMs: 1_000, maxTimeoutMs: 5_000, criticality: 'critical' }))
 * app.get('/api/orders', async (c) => c.json(await db.selectFrom('orders').selectAll().execute()))
 * app.onError(honoGovernorErrorHandler())
 * serve({ fetch: app.fetch, port: 3000 })
 * ```
 */
export function honoGovernor(options: GovernedRequestOptions): MiddlewareHandler<HonoGovernorEnv> {
  const resolved = resolveGovernedRequestOptions(options)
  return async (c, next) => {
    let governed: GovernedRequest
    try {
      const node = nodeBindings(c)
      governed = node ? governNodeRequest(node.incoming, node.outgoing, resolved) : governWebRequest(c.req.raw, resolved)
    } catch (error) {
      const outcome = governorHttpOutcome(error, { clientGone: false })
      if (!outcome) throw error
      return governorOutcomeResponse(outcome)
    }
    c.set('governor', governed)
    await governed.run(() => next())
    // A handler's error has been through app.onError already; ours get their own answer.
    if (c.error) {
      const outcome = governorHttpOutcome(c.error, { clientGone: governed.clientGone })
      if (outcome) c.res = governorOutcomeResponse(outcome)
    }
    return undefined
  }
}

/**
 * An `app.onError` handler that answers our errors (504, 503 with
 * `Retry-After`, 400, an unread 499 for a client that is gone) and hands the
 * rest to `fallback` (default: Hono's own, a plain 500). With it our errors are
 * not logged as 500s by Hono's default handler.
 *
 * @example
 * ```ts
 * app.onError(honoGovernorErrorHandler((error, c) => {
 *   console.error(error)
 *   return c.json({ error: 'internal' }, 500)
 * }))
 * ```
 */
export function honoGovernorErrorHandler(fallback?: ErrorHandler): ErrorHandler {
  return (error, c) => {
    const governed = (c as Context<HonoGovernorEnv>).get('governor') as GovernedRequest | undefined
    const outcome = governorHttpOutcome(error, { clientGone: governed?.clientGone ?? c.req.raw.signal.aborted })
    if (outcome) return governorOutcomeResponse(outcome)
    if (fallback) return fallback(error, c)
    // Hono's default: the error's own response when it has one (HTTPException), else a plain 500.
    const withResponse = error as Error & { getResponse?: () => Response }
    if (typeof withResponse.getResponse === 'function') return withResponse.getResponse()
    console.error(error)
    return c.text('Internal Server Error', 500)
  }
}

function nodeBindings(c: Context): { readonly incoming: IncomingMessage; readonly outgoing: ServerResponse } | undefined {
  const env = c.env as { incoming?: unknown; outgoing?: unknown } | undefined
  if (env && isNodeStream(env.incoming) && isNodeStream(env.outgoing) && 'writableFinished' in env.outgoing) {
    return { incoming: env.incoming as IncomingMessage, outgoing: env.outgoing as ServerResponse }
  }
  return undefined
}

function isNodeStream(value: unknown): value is { on: unknown } {
  return typeof value === 'object' && value !== null && typeof (value as { on?: unknown }).on === 'function'
}
