import { assertCriticality, type Criticality } from '../context/criticality.js'
import { assertDomain, assertTimeoutMs, describe } from '../context/validate.js'
import { InvalidOptionError } from '../errors/invalid-option-error.js'
import { GovernorError } from '../errors/governor-error.js'

/**
 * The header an HTTP client states its remaining patience in, lower-cased as Node keys headers.
 *
 * @example
 * ```ts
 * await fetch(url, { headers: { [REQUEST_TIMEOUT_HEADER]: '800' } })
 * ```
 */
export const REQUEST_TIMEOUT_HEADER = 'x-request-timeout'

/**
 * Longest header value read, in characters (after trimming). Anything longer
 * is invalid (`too_long`) whatever it holds, so a 10 kB value costs nothing
 * and is never parsed into a number.
 *
 * @example
 * ```ts
 * parseRequestTimeoutHeader('9'.repeat(MAX_REQUEST_TIMEOUT_HEADER_LENGTH + 1)) // throws, reason 'too_long'
 * ```
 */
export const MAX_REQUEST_TIMEOUT_HEADER_LENGTH = 64

/**
 * Why an `X-Request-Timeout` value was refused:
 * - `empty`: the header is present with nothing in it (`""`, or only spaces);
 * - `multiple`: the header was sent more than once, or holds a list (`"100, 200"`);
 * - `malformed`: not a plain run of ASCII digits (`"abc"`, `"-1"`, `"+5"`, `"1.5"`, `"1e3"`, `"1 0"`);
 * - `zero`: the value is 0 (a client that will wait 0 ms wants no answer);
 * - `too_long`: more than {@link MAX_REQUEST_TIMEOUT_HEADER_LENGTH} characters.
 *
 * @example
 * ```ts
 * const reason: InvalidRequestTimeoutReason = error.reason // 'malformed' for "1.5"
 * ```
 */
export type InvalidRequestTimeoutReason = 'empty' | 'multiple' | 'malformed' | 'zero' | 'too_long'

/**
 * What to do with an invalid `X-Request-Timeout`: `reject` answers 400 with a
 * JSON body and runs no handler; `ignore` serves the request with the route's
 * default timeout, as if the header were absent (the request records why in
 * `invalidTimeout`).
 *
 * @example
 * ```ts
 * const lenient: InvalidTimeoutAction = 'ignore'
 * ```
 */
export type InvalidTimeoutAction = 'reject' | 'ignore'

/**
 * The client sent an `X-Request-Timeout` we cannot use. An {@link InvalidOptionError}
 * (code `INVALID_OPTION`) whose `option` is the header name; the HTTP adapters
 * answer it with 400 and a JSON body whose `error.code` is `INVALID_REQUEST_TIMEOUT`.
 *
 * @example
 * ```ts
 * try {
 *   parseRequestTimeoutHeader('1.5')
 * } catch (error) {
 *   if (error instanceof InvalidRequestTimeoutError) console.log(error.reason) // 'malformed'
 * }
 * ```
 */
export class InvalidRequestTimeoutError extends GovernorError {
  readonly reason: InvalidRequestTimeoutReason
  /** The header's name, lower-case. */
  readonly header: string
  /** The value as received (a list when the header came more than once); may be long, do not log it whole. */
  readonly value: string | readonly string[]
  /** For Express's and Koa's default error handlers: answer 400, the message is safe to show. */
  readonly status = 400
  readonly expose = true

  constructor(details: { readonly reason: InvalidRequestTimeoutReason; readonly header: string; readonly value: string | readonly string[] }) {
    super('INVALID_REQUEST_TIMEOUT', `invalid header ${details.header}: ${explain(details.reason, details.value)}`)
    this.reason = details.reason
    this.header = details.header
    this.value = details.value
  }
}

function explain(reason: InvalidRequestTimeoutReason, value: string | readonly string[]): string {
  const got = typeof value === 'string' ? describe(value) : value.map((item) => describe(item)).join(', ')
  switch (reason) {
    case 'empty':
      return 'is empty; send a whole number of milliseconds, or leave the header out'
    case 'multiple':
      return `was sent more than once or as a list; send one whole number of milliseconds; got ${got}`
    case 'malformed':
      return `must be a whole number of milliseconds, digits only (no sign, decimals or exponent); got ${got}`
    case 'zero':
      return 'must be at least 1 millisecond; got 0'
    case 'too_long':
      return `is longer than ${MAX_REQUEST_TIMEOUT_HEADER_LENGTH} characters; got ${got}`
  }
}

/**
 * Parses an `X-Request-Timeout` value into whole milliseconds; `undefined`
 * when the header is absent. The exact rules, in order:
 *
 * 1. absent (`undefined`, `null` or an empty list) → `undefined`: the route's default applies;
 * 2. a list of two or more values (the header sent more than once, as in
 *    `req.headersDistinct`) → `multiple`;
 * 3. leading and trailing spaces and tabs are trimmed, as HTTP itself does
 *    (RFC 9110 §5.5), so `" 100"` is 100; more than
 *    {@link MAX_REQUEST_TIMEOUT_HEADER_LENGTH} characters left → `too_long`;
 * 4. a comma anywhere → `multiple` (Node and `Headers` join a repeated header
 *    with `", "`, so `"100, 200"` is what a header sent twice looks like);
 * 5. nothing left → `empty`;
 * 6. anything but ASCII digits → `malformed` (`"-1"`, `"+1"`, `"1.5"`, `"1e3"`,
 *    `"0x10"`, `"1 0"`, `"abc"`); leading zeros are allowed (`"007"` is 7);
 * 7. the value 0 → `zero`;
 * 8. otherwise the number, however large (`"99999999999999999999"` is 1e20):
 *    the cap is applied by {@link resolveRequestTimeout}, not here.
 *
 * Throws {@link InvalidRequestTimeoutError} for cases 2 to 7.
 *
 * @example
 * ```ts
 * parseRequestTimeoutHeader(req.headers['x-request-timeout']) // '250' → 250, undefined → undefined
 * parseRequestTimeoutHeader(' 100') // 100
 * parseRequestTimeoutHeader('1e3') // throws InvalidRequestTimeoutError, reason 'malformed'
 * ```
 */
export function parseRequestTimeoutHeader(value: string | readonly string[] | undefined | null, header: string = REQUEST_TIMEOUT_HEADER): number | undefined {
  if (value === undefined || value === null) return undefined
  let single: string
  if (typeof value === 'string') {
    single = value
  } else if (Array.isArray(value)) {
    if (value.length === 0) return undefined
    if (value.length > 1) throw new InvalidRequestTimeoutError({ reason: 'multiple', header, value })
    single = String(value[0])
  } else {
    throw new InvalidRequestTimeoutError({ reason: 'malformed', header, value: String(value) })
  }
  const trimmed = trimOws(single)
  if (trimmed.length > MAX_REQUEST_TIMEOUT_HEADER_LENGTH) throw new InvalidRequestTimeoutError({ reason: 'too_long', header, value: single })
  if (trimmed.includes(',')) throw new InvalidRequestTimeoutError({ reason: 'multiple', header, value: single })
  if (trimmed.length === 0) throw new InvalidRequestTimeoutError({ reason: 'empty', header, value: single })
  if (!/^[0-9]+$/.test(trimmed)) throw new InvalidRequestTimeoutError({ reason: 'malformed', header, value: single })
  const ms = Number(trimmed)
  if (ms === 0) throw new InvalidRequestTimeoutError({ reason: 'zero', header, value: single })
  return ms
}

function trimOws(value: string): string {
  return value.replace(/^[ \t]+|[ \t]+$/g, '')
}

/**
 * How a route turns the header into a budget.
 *
 * @example
 * ```ts
 * const checkout: RequestTimeoutOptions = { defaultTimeoutMs: 2_000, maxTimeoutMs: 5_000, onInvalidTimeout: 'reject' }
 * ```
 */
export interface RequestTimeoutOptions {
  /** Budget when the header is absent (or invalid and ignored), in milliseconds, at least 1. */
  readonly defaultTimeoutMs: number
  /**
   * The most a client may ask for; larger values are capped to it (not an
   * error). Default: `defaultTimeoutMs`, so a client can only shorten its budget.
   */
  readonly maxTimeoutMs?: number | undefined
  /** `reject` (default) answers 400; `ignore` uses `defaultTimeoutMs`. */
  readonly onInvalidTimeout?: InvalidTimeoutAction | undefined
  /** The header to read. Default `x-request-timeout`; case-insensitive. */
  readonly header?: string | undefined
}

/**
 * {@link RequestTimeoutOptions} checked, with every default filled in.
 *
 * @example
 * ```ts
 * const resolved: ResolvedRequestTimeoutOptions = resolveRequestTimeoutOptions({ defaultTimeoutMs: 1_000 })
 * ```
 */
export interface ResolvedRequestTimeoutOptions {
  readonly defaultTimeoutMs: number
  readonly maxTimeoutMs: number
  readonly onInvalidTimeout: InvalidTimeoutAction
  readonly header: string
}

/**
 * Checks timeout options once, when a route or middleware is set up. Throws
 * {@link InvalidOptionError} for a missing or non-positive default, a max below
 * the default, an unknown `onInvalidTimeout`, or a header name that is not a token.
 *
 * @example
 * ```ts
 * const resolved = resolveRequestTimeoutOptions({ defaultTimeoutMs: 1_000 }) // maxTimeoutMs 1_000, 'reject', 'x-request-timeout'
 * ```
 */
export function resolveRequestTimeoutOptions(options: RequestTimeoutOptions): ResolvedRequestTimeoutOptions {
  if (options === null || typeof options !== 'object') {
    throw new InvalidOptionError('options', `must be an object; got ${describe(options)}`)
  }
  const { defaultTimeoutMs, maxTimeoutMs = defaultTimeoutMs, onInvalidTimeout = 'reject', header = REQUEST_TIMEOUT_HEADER } = options
  assertPositiveTimeout(defaultTimeoutMs, 'defaultTimeoutMs')
  assertPositiveTimeout(maxTimeoutMs, 'maxTimeoutMs')
  if (maxTimeoutMs < defaultTimeoutMs) {
    throw new InvalidOptionError('maxTimeoutMs', `must not be below defaultTimeoutMs (${defaultTimeoutMs}); got ${maxTimeoutMs}`)
  }
  if (onInvalidTimeout !== 'reject' && onInvalidTimeout !== 'ignore') {
    throw new InvalidOptionError('onInvalidTimeout', `must be 'reject' or 'ignore'; got ${describe(onInvalidTimeout)}`)
  }
  if (typeof header !== 'string' || !/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/.test(header)) {
    throw new InvalidOptionError('header', `must be an HTTP header name; got ${describe(header)}`)
  }
  return Object.freeze({ defaultTimeoutMs, maxTimeoutMs, onInvalidTimeout, header: header.toLowerCase() })
}

function assertPositiveTimeout(value: unknown, option: string): asserts value is number {
  assertTimeoutMs(value, option)
  if (value < 1) throw new InvalidOptionError(option, `must be at least 1 millisecond; got ${value}`)
}

/**
 * The budget a request gets.
 *
 * @example
 * ```ts
 * const { timeoutMs, source, capped } = resolveRequestTimeout('60000', resolveRequestTimeoutOptions({ defaultTimeoutMs: 1_000, maxTimeoutMs: 5_000 }))
 * // 5000, 'header', true
 * ```
 */
export interface ResolvedRequestTimeout {
  /** Milliseconds, from 1 to the route's `maxTimeoutMs`: never unbounded. */
  readonly timeoutMs: number
  /** `header` when the client's value was used (perhaps capped), `default` otherwise. */
  readonly source: 'header' | 'default'
  /** The client asked for more than `maxTimeoutMs` and got `maxTimeoutMs`. */
  readonly capped: boolean
  /** With `onInvalidTimeout: 'ignore'`, why the header was ignored. */
  readonly invalid: InvalidRequestTimeoutError | undefined
}

/**
 * Turns a header value into the request's budget: the parsed value capped at
 * `maxTimeoutMs`, or `defaultTimeoutMs` when absent. An invalid value (see
 * {@link parseRequestTimeoutHeader}) throws {@link InvalidRequestTimeoutError}
 * with `onInvalidTimeout: 'reject'`, and gives the default with `'ignore'`.
 *
 * | value                      | reject              | ignore            |
 * | -------------------------- | ------------------- | ----------------- |
 * | absent                     | default             | default           |
 * | `"250"`, `" 250"`, `"0250"` | 250                | 250               |
 * | above max, any length ≤ 64 | max (capped)        | max (capped)      |
 * | `""`                       | 400 `empty`         | default           |
 * | `"abc"` `"-1"` `"1.5"` `"1e3"` | 400 `malformed` | default           |
 * | `"0"`                      | 400 `zero`          | default           |
 * | `"100, 200"` / sent twice  | 400 `multiple`      | default           |
 * | more than 64 characters    | 400 `too_long`      | default           |
 *
 * @example
 * ```ts
 * const options = resolveRequestTimeoutOptions({ defaultTimeoutMs: 1_000, maxTimeoutMs: 5_000, onInvalidTimeout: 'ignore' })
 * resolveRequestTimeout(undefined, options).timeoutMs // 1000
 * resolveRequestTimeout('abc', options).invalid?.reason // 'malformed'
 * ```
 */
export function resolveRequestTimeout(value: string | readonly string[] | undefined | null, options: ResolvedRequestTimeoutOptions): ResolvedRequestTimeout {
  let parsed: number | undefined
  try {
    parsed = parseRequestTimeoutHeader(value, options.header)
  } catch (error) {
    if (!(error instanceof InvalidRequestTimeoutError) || options.onInvalidTimeout === 'reject') throw error
    return Object.freeze({ timeoutMs: options.defaultTimeoutMs, source: 'default', capped: false, invalid: error })
  }
  if (parsed === undefined) return Object.freeze({ timeoutMs: options.defaultTimeoutMs, source: 'default', capped: false, invalid: undefined })
  const capped = parsed > options.maxTimeoutMs
  return Object.freeze({ timeoutMs: capped ? options.maxTimeoutMs : parsed, source: 'header', capped, invalid: undefined })
}

/**
 * Everything a route says about its requests: the timeout rules plus the
 * criticality and domain its queries run under.
 *
 * @example
 * ```ts
 * const report: RoutePolicyOptions = { defaultTimeoutMs: 10_000, maxTimeoutMs: 30_000, criticality: 'sheddable', domain: 'report' }
 * ```
 */
export interface RoutePolicyOptions extends RequestTimeoutOptions {
  /** Criticality of the route's queries. Default: the dialect's (or the domain policy's). */
  readonly criticality?: Criticality | undefined
  /** Domain of the route's queries; the dialect's policy for it applies too (it can only shorten the budget). */
  readonly domain?: string | undefined
}

/**
 * {@link RoutePolicyOptions} checked, with every default filled in.
 *
 * @example
 * ```ts
 * const policy: ResolvedRoutePolicy = resolveRoutePolicy({ defaultTimeoutMs: 800, criticality: 'critical' })
 * ```
 */
export interface ResolvedRoutePolicy extends ResolvedRequestTimeoutOptions {
  readonly criticality: Criticality | undefined
  readonly domain: string | undefined
}

/**
 * Checks a route's options once, at setup. Throws {@link InvalidOptionError}.
 *
 * @example
 * ```ts
 * const policy = resolveRoutePolicy({ defaultTimeoutMs: 800, criticality: 'critical', domain: 'checkout' })
 * ```
 */
export function resolveRoutePolicy(options: RoutePolicyOptions): ResolvedRoutePolicy {
  const timeout = resolveRequestTimeoutOptions(options)
  const { criticality, domain } = options
  if (criticality !== undefined) assertCriticality(criticality, 'criticality')
  if (domain !== undefined) assertDomain(domain, 'domain')
  return Object.freeze({ ...timeout, criticality, domain })
}
