import type { IncomingMessage, ServerResponse } from 'node:http'

/**
 * What the endpoint needs of a metrics registry: prom-client's `Registry`
 * (and `register`) fits as is; so does anything with the same two members.
 *
 * @example
 * ```ts
 * import { register } from 'prom-client'
 * const registry: MetricsRegistry = register
 * ```
 */
export interface MetricsRegistry {
  /** The exposition format's content type, e.g. `text/plain; version=0.0.4; charset=utf-8`. */
  readonly contentType: string
  /** The metrics in that format. */
  metrics(): Promise<string> | string
}

/**
 * The answer to a metrics scrape, framework-neutral.
 *
 * @example
 * ```ts
 * const { status, headers, body } = await renderMetrics(registry)
 * ```
 */
export interface MetricsResponse {
  /** 200, or 500 when the registry failed (the body then says so, without details). */
  readonly status: 200 | 500
  readonly headers: Readonly<Record<string, string>>
  readonly body: string
}

/**
 * Collects the registry's metrics into a response. Never rejects: a registry
 * that throws gives a 500 and `onError` hears why (default `console.error`).
 *
 * @example
 * ```ts
 * // Fastify
 * app.get('/metrics', { config: { governor: false } }, async (_request, reply) => {
 *   const { status, headers, body } = await renderMetrics(registry)
 *   return reply.code(status).headers(headers).send(body)
 * })
 * ```
 */
export async function renderMetrics(registry: MetricsRegistry, onError: (error: unknown) => void = defaultOnError): Promise<MetricsResponse> {
  try {
    const body = await registry.metrics()
    return { status: 200, headers: { 'content-type': registry.contentType, 'cache-control': 'no-store' }, body: String(body) }
  } catch (error) {
    try {
      onError(error)
    } catch {
      // A failing logger must not turn a 500 into a crash.
    }
    return { status: 500, headers: { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' }, body: 'metrics collection failed\n' }
  }
}

/**
 * The metrics as a web `Response` (Hono, and other fetch-style servers).
 *
 * @example
 * ```ts
 * // Hono
 * app.get('/metrics', () => metricsResponse(registry))
 * ```
 */
export async function metricsResponse(registry: MetricsRegistry, onError?: (error: unknown) => void): Promise<Response> {
  const { status, headers, body } = await renderMetrics(registry, onError)
  return new Response(body, { status, headers })
}

/**
 * Options of {@link createMetricsHandler}.
 *
 * @example
 * ```ts
 * const options: MetricsHandlerOptions = { path: '/internal/metrics', onError: (error) => logger.warn(error) }
 * ```
 */
export interface MetricsHandlerOptions {
  /** The path served (query string ignored). Default `/metrics`; `null` serves every path it is called for. */
  readonly path?: string | null | undefined
  /** Hears why the registry failed (the scrape gets a 500). Default `console.error`. */
  readonly onError?: ((error: unknown) => void) | undefined
}

/**
 * A node:http handler (also Express middleware) that serves the registry:
 * GET and HEAD on `path` get the metrics, other methods 405 with `Allow`;
 * another path goes to `next` when there is one (Express), else 404. The
 * returned promise never rejects.
 *
 * @example
 * ```ts
 * const metrics = createMetricsHandler(registry)
 * http.createServer((req, res) => (req.url === '/metrics' ? metrics(req, res) : app(req, res)))
 * // Express
 * expressApp.use(createMetricsHandler(registry))
 * ```
 */
export function createMetricsHandler(
  registry: MetricsRegistry,
  options: MetricsHandlerOptions = {},
): (req: IncomingMessage, res: ServerResponse, next?: (error?: unknown) => void) => Promise<void> {
  if (registry === null || typeof registry !== 'object' || typeof registry.metrics !== 'function' || typeof registry.contentType !== 'string') {
    throw new TypeError('createMetricsHandler: registry must have a contentType string and a metrics() method')
  }
  const path = options.path === undefined ? '/metrics' : options.path
  const onError = options.onError ?? defaultOnError
  return async (req, res, next) => {
    if (path !== null && pathnameOf(req) !== path) {
      if (next) next()
      else send(res, 404, { 'content-type': 'text/plain; charset=utf-8' }, 'not found\n', false)
      return
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(res, 405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' }, 'method not allowed\n', false)
      return
    }
    const { status, headers, body } = await renderMetrics(registry, onError)
    send(res, status, headers, body, req.method === 'HEAD')
  }
}

function pathnameOf(req: IncomingMessage): string {
  // Express rewrites req.url under a mount path; originalUrl keeps the full one.
  const url = (req as IncomingMessage & { originalUrl?: string }).originalUrl ?? req.url ?? '/'
  const query = url.indexOf('?')
  return query === -1 ? url : url.slice(0, query)
}

function send(res: ServerResponse, status: number, headers: Readonly<Record<string, string>>, body: string, headOnly: boolean): void {
  if (res.headersSent || res.destroyed) return
  res.writeHead(status, { ...headers, 'content-length': String(Buffer.byteLength(body)) })
  res.end(headOnly ? undefined : body)
}

function defaultOnError(error: unknown): void {
  console.error('pg-governor: metrics collection failed', error)
}
