import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Criticality } from '../context/criticality.js'
import { now } from '../context/monotonic-clock.js'
import { withQueryContext } from '../context/query-context.js'
import { InvalidOptionError } from '../errors/invalid-option-error.js'
import {
  InvalidRequestTimeoutError,
  resolveRequestTimeout,
  resolveRoutePolicy,
  type ResolvedRoutePolicy,
  type RoutePolicyOptions,
} from './request-timeout.js'

/**
 * Logged when a client went away before its response was finished (nginx's
 * 499 "client closed request"). Nothing is written to such a client.
 *
 * @example
 * ```ts
 * const onClientGone = (event: ClientGoneEvent) => logger.info(event, 'client closed request')
 * // { status: 499, method: 'GET', url: '/report', elapsedMs: 812.4, timeoutMs: 5000, criticality: 'sheddable', domain: 'report' }
 * ```
 */
export interface ClientGoneEvent {
  readonly status: 499
  readonly method: string
  readonly url: string
  /** From the request's arrival at the adapter to the disconnect. */
  readonly elapsedMs: number
  /** The budget the request had. */
  readonly timeoutMs: number
  readonly criticality: Criticality | undefined
  readonly domain: string | undefined
}

/**
 * Options of every HTTP adapter, per route (or shared by the routes of a domain).
 *
 * @example
 * ```ts
 * const report: GovernedRequestOptions = {
 *   defaultTimeoutMs: 5_000,
 *   maxTimeoutMs: 20_000,
 *   criticality: 'sheddable',
 *   domain: 'report',
 *   onInvalidTimeout: 'ignore',
 *   onClientGone: (event) => logger.info(event, 'client closed request'),
 * }
 * ```
 */
export interface GovernedRequestOptions extends RoutePolicyOptions {
  /** Called once when the client disconnects before its response finished (log it as 499). Errors it throws become process warnings. */
  readonly onClientGone?: ((event: ClientGoneEvent) => void) | undefined
}

/**
 * {@link GovernedRequestOptions} checked once, at setup.
 *
 * @example
 * ```ts
 * const checked: ResolvedGovernedRequestOptions = resolveGovernedRequestOptions({ defaultTimeoutMs: 1_000 })
 * ```
 */
export interface ResolvedGovernedRequestOptions extends ResolvedRoutePolicy {
  readonly onClientGone: ((event: ClientGoneEvent) => void) | undefined
}

/**
 * Checks adapter options once, when the route or middleware is set up; throws
 * {@link InvalidOptionError} for a bad value. Adapters call it for you; call it
 * yourself to share one checked policy between routes.
 *
 * @example
 * ```ts
 * const checkout = resolveGovernedRequestOptions({ defaultTimeoutMs: 2_000, maxTimeoutMs: 5_000, criticality: 'critical', domain: 'checkout' })
 * ```
 */
export function resolveGovernedRequestOptions(options: GovernedRequestOptions | ResolvedGovernedRequestOptions): ResolvedGovernedRequestOptions {
  const policy = resolveRoutePolicy(options)
  const { onClientGone } = options
  if (onClientGone !== undefined && typeof onClientGone !== 'function') {
    throw new InvalidOptionError('onClientGone', 'must be a function')
  }
  return Object.freeze({ ...policy, onClientGone })
}

/**
 * One HTTP request under governance: its budget, the signal that fires when
 * its client disconnects, and `run`, which runs code inside the request's
 * query context. Every adapter makes one per request.
 *
 * @example
 * ```ts
 * const governed = governNodeRequest(req, res, options)
 * const rows = await governed.run(() => db.selectFrom('orders').selectAll().execute())
 * console.log(governed.timeoutMs, governed.source, governed.remainingMs())
 * ```
 */
export interface GovernedRequest {
  /** Aborted when the client disconnects before the response finished; the queries of `run` are then cancelled on the server. */
  readonly signal: AbortSignal
  /** The request's budget in milliseconds, from its arrival: from the header (capped) or the default. */
  readonly timeoutMs: number
  /** Where `timeoutMs` came from. */
  readonly source: 'header' | 'default'
  /** The client asked for more than the route's maximum. */
  readonly capped: boolean
  /** With `onInvalidTimeout: 'ignore'`, why the header was ignored. */
  readonly invalidTimeout: InvalidRequestTimeoutError | undefined
  /** The deadline as epoch milliseconds (for passing on to other services). */
  readonly deadline: number
  readonly criticality: Criticality | undefined
  readonly domain: string | undefined
  /** True once the client has disconnected before its response finished. */
  readonly clientGone: boolean
  /** Milliseconds left until the deadline, 0 when spent. */
  remainingMs(): number
  /** Runs `fn` in the request's query context (deadline, signal, criticality, domain). */
  run<T>(fn: () => T): T
}

const governedByRequest = new WeakMap<object, GovernedRequest>()

class GovernedRequestHandle implements GovernedRequest {
  readonly signal: AbortSignal
  readonly timeoutMs: number
  readonly source: 'header' | 'default'
  readonly capped: boolean
  readonly invalidTimeout: InvalidRequestTimeoutError | undefined
  readonly deadline: number
  readonly criticality: Criticality | undefined
  readonly domain: string | undefined
  readonly #deadline: number

  constructor(signal: AbortSignal, header: string | readonly string[] | undefined | null, policy: ResolvedRoutePolicy, startedAt: number) {
    const timeout = resolveRequestTimeout(header, policy)
    this.signal = signal
    this.timeoutMs = timeout.timeoutMs
    this.source = timeout.source
    this.capped = timeout.capped
    this.invalidTimeout = timeout.invalid
    this.deadline = Date.now() + timeout.timeoutMs
    this.criticality = policy.criticality
    this.domain = policy.domain
    this.#deadline = startedAt + timeout.timeoutMs
  }

  get clientGone(): boolean {
    return this.signal.aborted
  }

  remainingMs(): number {
    return Math.max(0, this.#deadline - now())
  }

  run<T>(fn: () => T): T {
    return withQueryContext({ signal: this.signal, timeoutMs: this.remainingMs(), criticality: this.criticality, domain: this.domain }, fn)
  }
}

/** The abort reason of a request whose client went away. */
function clientGoneReason(): DOMException {
  return new DOMException('the client disconnected before the response was sent', 'AbortError')
}

/**
 * Puts a node:http request under governance (Express and Fastify requests are
 * node requests too): reads the timeout header, starts the budget now, and
 * aborts `signal` when the response closes before it finished (`res` 'close'
 * with `!res.writableFinished`, or `req` 'aborted'). Throws
 * {@link InvalidRequestTimeoutError} when the header is invalid and the route
 * rejects invalid values; nothing is listened to then.
 *
 * @example
 * ```ts
 * const options = resolveGovernedRequestOptions({ defaultTimeoutMs: 1_000, maxTimeoutMs: 5_000 })
 * http.createServer(async (req, res) => {
 *   const governed = governNodeRequest(req, res, options)
 *   const { rows } = await governed.run(() => sql`select now()`.execute(db))
 *   res.end(JSON.stringify(rows))
 * })
 * ```
 */
export function governNodeRequest(
  req: IncomingMessage,
  res: ServerResponse,
  options: ResolvedGovernedRequestOptions,
  onClientGone: ((event: ClientGoneEvent) => void) | undefined = options.onClientGone,
): GovernedRequest {
  const startedAt = now()
  const controller = new AbortController()
  const header = req.headersDistinct?.[options.header] ?? req.headers[options.header]
  const governed = new GovernedRequestHandle(controller.signal, header, options, startedAt)
  governedByRequest.set(req, governed)

  const gone = (): void => {
    if (controller.signal.aborted || res.writableFinished) return
    controller.abort(clientGoneReason())
    reportClientGone(onClientGone, governed, req.method ?? 'GET', req.url ?? '', startedAt)
  }
  const onClose = (): void => {
    req.off('aborted', gone)
    gone()
  }
  if (res.destroyed || req.socket?.destroyed === true) {
    // The client left before the adapter ran (during body parsing, say).
    gone()
  } else {
    res.once('close', onClose)
    req.once('aborted', gone)
  }
  return governed
}

/**
 * Puts a web `Request` under governance (Hono on Bun, Deno, workers): the
 * client is gone when `request.signal` aborts, which the runtime does on a
 * disconnect. Throws {@link InvalidRequestTimeoutError} like {@link governNodeRequest}.
 *
 * @example
 * ```ts
 * export default {
 *   async fetch(request: Request) {
 *     const governed = governWebRequest(request, options)
 *     return Response.json(await governed.run(() => db.selectFrom('item').selectAll().execute()))
 *   },
 * }
 * ```
 */
export function governWebRequest(
  request: Request,
  options: ResolvedGovernedRequestOptions,
  onClientGone: ((event: ClientGoneEvent) => void) | undefined = options.onClientGone,
): GovernedRequest {
  const startedAt = now()
  const header = request.headers.get(options.header)
  const controller = new AbortController()
  const governed = new GovernedRequestHandle(controller.signal, header, options, startedAt)
  governedByRequest.set(request, governed)
  const gone = (): void => {
    if (controller.signal.aborted) return
    controller.abort(clientGoneReason())
    let url = request.url
    try {
      const parsed = new URL(request.url)
      url = `${parsed.pathname}${parsed.search}`
    } catch {
      // keep the raw url
    }
    reportClientGone(onClientGone, governed, request.method, url, startedAt)
  }
  if (request.signal.aborted) gone()
  else request.signal.addEventListener('abort', gone, { once: true })
  return governed
}

/**
 * The governed request an adapter made for `request` (a node `IncomingMessage`,
 * an Express or Fastify raw request, or a web `Request`), if any.
 *
 * @example
 * ```ts
 * app.get('/orders', (req, res) => {
 *   res.json({ budgetMs: governedRequestOf(req)?.timeoutMs })
 * })
 * ```
 */
export function governedRequestOf(request: object): GovernedRequest | undefined {
  return governedByRequest.get(request)
}

function reportClientGone(
  onClientGone: ((event: ClientGoneEvent) => void) | undefined,
  governed: GovernedRequest,
  method: string,
  url: string,
  startedAt: number,
): void {
  if (!onClientGone) return
  try {
    onClientGone(
      Object.freeze({
        status: 499,
        method,
        url,
        elapsedMs: now() - startedAt,
        timeoutMs: governed.timeoutMs,
        criticality: governed.criticality,
        domain: governed.domain,
      }),
    )
  } catch (error) {
    process.emitWarning(`pg-governor: onClientGone threw: ${error instanceof Error ? error.message : String(error)}`, 'GovernorWarning')
  }
}
