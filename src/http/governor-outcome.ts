import type { IncomingMessage, ServerResponse } from 'node:http'
import { GovernorError } from '../errors/governor-error.js'
import { LoadShedError } from '../errors/load-shed-error.js'
import { governedRequestOf } from './governed-request.js'
import { InvalidRequestTimeoutError, type InvalidRequestTimeoutReason } from './request-timeout.js'

/**
 * The JSON body of every error response the adapters write.
 *
 * @example
 * ```ts
 * const body: GovernorErrorBody = { error: { code: 'LOAD_SHED', message: 'the server is shedding load; retry later', retryAfterMs: 1200 } }
 * ```
 */
export interface GovernorErrorBody {
  readonly error: {
    readonly code: 'DEADLINE_EXCEEDED' | 'LOAD_SHED' | 'INVALID_REQUEST_TIMEOUT'
    readonly message: string
    /** LOAD_SHED: the hint behind Retry-After, in milliseconds. */
    readonly retryAfterMs?: number
    /** INVALID_REQUEST_TIMEOUT: the header at fault, lower-case. */
    readonly header?: string
    /** INVALID_REQUEST_TIMEOUT: what is wrong with it. */
    readonly reason?: InvalidRequestTimeoutReason
  }
}

/**
 * What an adapter does with an error: `respond` with a status, headers and a
 * JSON body, or (`client_gone`) write nothing because nobody is listening;
 * `status` 499 is for the log only.
 *
 * @example
 * ```ts
 * const outcome = governorHttpOutcome(error, { clientGone: req.socket.destroyed })
 * if (outcome?.kind === 'respond') res.writeHead(outcome.status, outcome.headers).end(JSON.stringify(outcome.body))
 * ```
 */
export type GovernorHttpOutcome =
  | {
      readonly kind: 'respond'
      readonly status: 400 | 503 | 504
      readonly headers: Readonly<Record<string, string>>
      readonly body: GovernorErrorBody
      readonly error: GovernorError
    }
  | { readonly kind: 'client_gone'; readonly status: 499; readonly error: GovernorError }

/** Longest cause chain searched for a pg-governor error. */
const MAX_CAUSE_DEPTH = 8

/**
 * The pg-governor error in `error` or its `cause` chain (a handler may wrap
 * ours), or `undefined`.
 *
 * @example
 * ```ts
 * findGovernorError(new Error('loading orders failed', { cause: shedError })) // shedError
 * ```
 */
export function findGovernorError(error: unknown): GovernorError | undefined {
  let current = error
  for (let depth = 0; depth < MAX_CAUSE_DEPTH && current !== null && typeof current === 'object'; depth++) {
    if (current instanceof GovernorError) return current
    current = (current as { cause?: unknown }).cause
  }
  return undefined
}

/**
 * `Retry-After` in whole seconds for a hint in milliseconds: rounded up, at least 1.
 *
 * @example
 * ```ts
 * retryAfterSeconds(50) // 1
 * retryAfterSeconds(2_100) // 3
 * ```
 */
export function retryAfterSeconds(retryAfterMs: number): number {
  if (!Number.isFinite(retryAfterMs) || retryAfterMs <= 0) return 1
  return Math.max(1, Math.ceil(retryAfterMs / 1000))
}

const JSON_HEADERS = Object.freeze({ 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' })

/**
 * Maps an error to the HTTP answer (the table every adapter follows), or
 * `undefined` for errors that are not ours to answer (they go on to the
 * framework's error handling):
 *
 * | error                                   | answer                                       |
 * | --------------------------------------- | -------------------------------------------- |
 * | any of ours, after the client left      | nothing written (`client_gone`, logged 499)  |
 * | `DEADLINE_EXCEEDED`                     | 504                                          |
 * | `LOAD_SHED`                             | 503, `Retry-After` in seconds (ceil, ≥ 1)    |
 * | invalid `X-Request-Timeout` (rejected)  | 400                                          |
 * | `QUERY_CANCELED` while the client is there, anything else | `undefined` (the framework's 500) |
 *
 * @example
 * ```ts
 * const outcome = governorHttpOutcome(error, { clientGone: governed.clientGone })
 * if (outcome === undefined) throw error
 * ```
 */
export function governorHttpOutcome(error: unknown, context: { readonly clientGone: boolean }): GovernorHttpOutcome | undefined {
  const found = findGovernorError(error)
  if (!found) return undefined
  if (context.clientGone && (found.code === 'QUERY_CANCELED' || found.code === 'DEADLINE_EXCEEDED' || found.code === 'LOAD_SHED')) {
    return { kind: 'client_gone', status: 499, error: found }
  }
  if (found instanceof InvalidRequestTimeoutError) {
    return {
      kind: 'respond',
      status: 400,
      headers: JSON_HEADERS,
      body: { error: { code: 'INVALID_REQUEST_TIMEOUT', message: `${found.header} ${messageTail(found.message)}`, header: found.header, reason: found.reason } },
      error: found,
    }
  }
  if (found.code === 'DEADLINE_EXCEEDED') {
    return {
      kind: 'respond',
      status: 504,
      headers: JSON_HEADERS,
      body: { error: { code: 'DEADLINE_EXCEEDED', message: "the request's deadline passed before the database answered" } },
      error: found,
    }
  }
  if (found instanceof LoadShedError) {
    return {
      kind: 'respond',
      status: 503,
      headers: { ...JSON_HEADERS, 'retry-after': String(retryAfterSeconds(found.retryAfterMs)) },
      body: { error: { code: 'LOAD_SHED', message: 'the server is shedding load; retry later', retryAfterMs: found.retryAfterMs } },
      error: found,
    }
  }
  return undefined
}

function messageTail(message: string): string {
  // The message reads "invalid header <name>: <explanation>".
  const colon = message.indexOf(': ')
  return colon === -1 ? message : message.slice(colon + 2)
}

/**
 * Writes an outcome to a node response: the JSON answer when headers were not
 * sent yet; when they were (a streamed body), the response is destroyed so the
 * client sees a failure, not a truncated success; nothing for `client_gone`.
 *
 * @example
 * ```ts
 * const outcome = governorHttpOutcome(error, { clientGone: governed.clientGone })
 * if (outcome) writeGovernorOutcome(res, outcome)
 * ```
 */
export function writeGovernorOutcome(res: ServerResponse, outcome: GovernorHttpOutcome): void {
  if (outcome.kind === 'client_gone' || res.writableEnded || res.destroyed) return
  if (res.headersSent) {
    res.destroy(outcome.error)
    return
  }
  const body = JSON.stringify(outcome.body)
  res.writeHead(outcome.status, { ...outcome.headers, 'content-length': String(Buffer.byteLength(body)) })
  res.end(body)
}

/**
 * True when the client of a node response left before it finished: the
 * adapter's signal fired, or (for a request no adapter saw) the socket is gone.
 *
 * @example
 * ```ts
 * if (clientGoneFrom(req, res)) return // nobody to answer
 * ```
 */
export function clientGoneFrom(req: IncomingMessage, res: ServerResponse): boolean {
  const governed = governedRequestOf(req)
  if (governed) return governed.clientGone
  return !res.writableFinished && (res.destroyed || req.socket?.destroyed === true)
}

/**
 * An outcome as a web `Response` (for Hono and other fetch-style servers):
 * the JSON answer, or an empty 499 for `client_gone` that no one will read.
 *
 * @example
 * ```ts
 * const outcome = governorHttpOutcome(error, { clientGone: request.signal.aborted })
 * if (outcome) return governorOutcomeResponse(outcome)
 * ```
 */
export function governorOutcomeResponse(outcome: GovernorHttpOutcome): Response {
  if (outcome.kind === 'client_gone') return new Response(null, { status: 499 })
  // A fresh headers object: @hono/node-server adds Content-Length to the one it is given.
  return new Response(JSON.stringify(outcome.body), { status: outcome.status, headers: { ...outcome.headers } })
}
