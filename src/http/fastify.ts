import type { FastifyError, FastifyInstance, FastifyPluginCallback, FastifyReply, FastifyRequest } from 'fastify'
import {
  governNodeRequest,
  resolveGovernedRequestOptions,
  type ClientGoneEvent,
  type GovernedRequest,
  type GovernedRequestOptions,
  type ResolvedGovernedRequestOptions,
} from './governed-request.js'
import { clientGoneFrom, governorHttpOutcome } from './governor-outcome.js'

/**
 * A route's override of the plugin's options, in the route's `config.governor`;
 * `false` leaves the route ungoverned (health checks, `/metrics`).
 *
 * @example
 * ```ts
 * fastify.get('/report', { config: { governor: { criticality: 'sheddable', maxTimeoutMs: 30_000 } } }, handler)
 * fastify.get('/healthz', { config: { governor: false } }, () => 'ok')
 * ```
 */
export type FastifyGovernorRouteConfig = Partial<GovernedRequestOptions> | false

declare module 'fastify' {
  interface FastifyRequest {
    /** The request's governance (pg-governor), `null` on ungoverned routes. */
    governor: GovernedRequest | null
  }
  interface FastifyContextConfig {
    /** pg-governor's per-route options, or `false` for an ungoverned route. */
    governor?: FastifyGovernorRouteConfig
  }
}

/**
 * Options of {@link fastifyGovernor}: the default policy of every route, which
 * a route's `config.governor` overrides field by field.
 *
 * @example
 * ```ts
 * const options: FastifyGovernorOptions = { defaultTimeoutMs: 1_000, maxTimeoutMs: 5_000, criticality: 'critical' }
 * ```
 */
export interface FastifyGovernorOptions extends GovernedRequestOptions {
  /**
   * Install an error handler that answers our errors and hands every other
   * error to the handler that was in place (default true). Set it to false
   * when you set your own, and call {@link replyWithGovernorError} from it.
   */
  readonly errorHandler?: boolean | undefined
}

const routePolicies = new WeakMap<object, ResolvedGovernedRequestOptions>()

/**
 * Fastify plugin (Fastify 5) that puts requests under governance: reads
 * `X-Request-Timeout` in `onRequest` (an invalid value is answered 400 there,
 * or replaced by the default with `onInvalidTimeout: 'ignore'`), runs
 * `preHandler` hooks registered after it and the handler inside the request's
 * query context (entered in `preHandler`, after body parsing, so the context
 * survives it), aborts the request's queries when the client disconnects, and
 * answers our errors: 504, 503 with `Retry-After`, nothing when the client is
 * gone (logged at info level as 499 through `request.log` unless `onClientGone`
 * is given). The governed request is `request.governor`.
 *
 * It is not encapsulated (like a `fastify-plugin` plugin): it governs the
 * routes of the scope it is registered in and of its children. Options are
 * checked at registration (and a route's `config.governor` when the route is
 * added); a bad option fails the boot with {@link InvalidOptionError}.
 *
 * @example
 * ```ts
 * import Fastify from 'fastify'
 * import { fastifyGovernor } from 'pg-governor/fastify'
 *
 * const app = Fastify({ logger: true })
 * await app.register(fastifyGovernor, { defaultTimeoutMs: 1_000, maxTimeoutMs: 5_000, criticality: 'critical' })
 * app.get('/orders/:id', async (request) => db.selectFrom('orders').where('id', '=', request.params.id).selectAll().execute())
 * app.get('/report', { config: { governor: { criticality: 'sheddable', domain: 'report', maxTimeoutMs: 30_000 } } }, buildReport)
 * ```
 */
export const fastifyGovernor: FastifyPluginCallback<FastifyGovernorOptions> = Object.assign(
  function fastifyGovernor(fastify: FastifyInstance, options: FastifyGovernorOptions, done: (error?: Error) => void): void {
    const given = pickPolicy(options)
    let base: ResolvedGovernedRequestOptions
    try {
      base = resolveGovernedRequestOptions(given)
    } catch (error) {
      done(error as Error)
      return
    }
    const policyFor = (override: FastifyGovernorRouteConfig | undefined): ResolvedGovernedRequestOptions | undefined => {
      if (override === false) return undefined
      if (override === undefined || override === null) return base
      let policy = routePolicies.get(override)
      if (!policy) {
        // Merged with the options as given, so a route raising defaultTimeoutMs alone also raises the max it defaults to.
        policy = resolveGovernedRequestOptions({ ...given, ...pickPolicy(override) })
        routePolicies.set(override, policy)
      }
      return policy
    }

    if (!fastify.hasRequestDecorator('governor')) fastify.decorateRequest('governor', null)

    // Check each route's override when it is added, so a bad one fails the boot, not a request.
    fastify.addHook('onRoute', (route) => {
      policyFor(route.config?.governor)
    })

    fastify.addHook('onRequest', (request, reply, next) => {
      // A 404 is answered 404, whatever its header says.
      const policy = request.is404 ? undefined : policyFor(request.routeOptions.config?.governor)
      if (!policy) {
        next()
        return
      }
      const onClientGone = policy.onClientGone ?? ((event: ClientGoneEvent) => request.log.info({ res: { statusCode: 499 }, clientGone: event }, 'client closed request'))
      try {
        request.governor = governNodeRequest(request.raw, reply.raw, policy, onClientGone)
      } catch (error) {
        if (!replyWithGovernorError(error, request, reply)) next(error as Error)
        return
      }
      next()
    })

    fastify.addHook('preHandler', (request, _reply, next) => {
      const governed = request.governor
      if (governed) governed.run(() => next())
      else next()
    })

    if (options.errorHandler !== false) {
      const previous = fastify.errorHandler
      fastify.setErrorHandler(function governorErrorHandler(this: FastifyInstance, error: FastifyError, request: FastifyRequest, reply: FastifyReply) {
        if (replyWithGovernorError(error, request, reply)) return
        return previous.call(this, error, request, reply)
      })
    }
    done()
  },
  {
    // What fastify-plugin sets, without depending on it: no encapsulation, a readable name.
    [Symbol.for('skip-override')]: true,
    [Symbol.for('fastify.display-name')]: 'pg-governor',
    [Symbol.for('plugin-meta')]: { name: 'pg-governor', fastify: '5.x' },
  },
)

/**
 * Answers one of our errors on a Fastify reply and returns true, or returns
 * false for any other error (and for ours once the reply was sent). For a
 * client that is gone it writes nothing and hijacks the reply. Call it first in
 * an error handler of your own (with the plugin's `errorHandler: false`).
 *
 * @example
 * ```ts
 * app.setErrorHandler((error, request, reply) => {
 *   if (replyWithGovernorError(error, request, reply)) return
 *   request.log.error(error)
 *   reply.code(500).send({ error: 'internal' })
 * })
 * ```
 */
export function replyWithGovernorError(error: unknown, request: FastifyRequest, reply: FastifyReply): boolean {
  const outcome = governorHttpOutcome(error, { clientGone: request.governor?.clientGone ?? clientGoneFrom(request.raw, reply.raw) })
  if (!outcome || reply.sent) return false
  if (outcome.kind === 'client_gone') {
    reply.hijack()
    return true
  }
  reply.code(outcome.status).headers(outcome.headers).send(outcome.body)
  return true
}

function pickPolicy(options: Partial<GovernedRequestOptions>): GovernedRequestOptions {
  const picked: Record<string, unknown> = {}
  for (const key of ['defaultTimeoutMs', 'maxTimeoutMs', 'onInvalidTimeout', 'header', 'criticality', 'domain', 'onClientGone'] as const) {
    if (options[key] !== undefined) picked[key] = options[key]
  }
  return picked as unknown as GovernedRequestOptions
}
