import { AsyncLocalStorage } from 'node:async_hooks'
import { InvalidOptionError } from '../errors/invalid-option-error.js'
import { nestedQueryRetry, resolveQueryRetry, type QueryRetry, type QueryRetryOptions } from '../retry/query-retry-options.js'
import { assertCriticality, type Criticality } from './criticality.js'
import { monotonicFromWallClock, now } from './monotonic-clock.js'
import { activeTrace, type TraceIds } from './trace-context.js'
import { assertDomain, assertTimeoutMs, describe } from './validate.js'

/**
 * What a caller can say about the queries it runs.
 *
 * @example
 * ```ts
 * const options: QueryContextOptions = {
 *   signal: request.signal,
 *   timeoutMs: 800,
 *   criticality: 'critical',
 *   domain: 'checkout',
 * }
 * ```
 */
export interface QueryContextOptions {
  /** Aborting it cancels every query of the context, on the server too. */
  readonly signal?: AbortSignal | undefined
  /** Time budget from now, in milliseconds (0 means already expired). */
  readonly timeoutMs?: number | undefined
  /** Absolute deadline, as a Date or epoch milliseconds. */
  readonly deadline?: Date | number | undefined
  /** How much the work matters to admission; inherited when omitted. */
  readonly criticality?: Criticality | undefined
  /** Names the policy (timeout, criticality) the queries fall under; inherited when omitted. */
  readonly domain?: string | undefined
  /**
   * How the context's queries retry (`maxAttempts`; `reads: true` is your
   * word that its statements outside a transaction only read); `false`: one
   * attempt, no retry. Inherited; a nested context's fields win.
   */
  readonly retry?: QueryRetryOptions | false | undefined
}

/** Something that waits or runs on behalf of a context and must hear of an abort. */
export interface AbortWatcher {
  onAbort(reason: unknown): void
}

/**
 * The ambient context every query inside `withQueryContext` sees. Immutable but
 * for the set of operations watching its signals.
 *
 * @example
 * ```ts
 * withQueryContext({ timeoutMs: 500 }, () => {
 *   const context = currentQueryContext() as QueryContext
 *   console.log(context.deadline - performance.now(), context.criticality, context.domain)
 * })
 * ```
 */
export class QueryContext {
  /** Deadline on the monotonic clock (`performance.now()`), `Infinity` when none. */
  readonly deadline: number
  readonly signals: readonly AbortSignal[]
  readonly criticality: Criticality | undefined
  readonly domain: string | undefined
  /** The context's retry options, merged over the ones it inherits; undefined when none was given. */
  readonly retry: QueryRetry | undefined
  /** The OpenTelemetry span active when the context was made, if tracing is enabled. */
  readonly trace: TraceIds | undefined
  #watchers: Set<AbortWatcher> | undefined
  /** The signals' abort listener while it is added; made on first use, since most contexts never watch a signal. */
  #onAbort: ((event: Event) => void) | undefined
  #scopeOpen = true

  constructor(deadline: number, signals: readonly AbortSignal[], criticality: Criticality | undefined, domain: string | undefined, retry?: QueryRetry | undefined) {
    this.deadline = deadline
    this.signals = signals
    this.criticality = criticality
    this.domain = domain
    this.retry = retry
    this.trace = activeTrace()
  }

  /** The first of the context's signals that has fired, if any. */
  abortedSignal(): AbortSignal | undefined {
    for (const signal of this.signals) if (signal.aborted) return signal
    return undefined
  }

  /**
   * Registers an operation to hear of an abort. The signal listeners are added
   * once per context, not once per query, and removed when the context's scope
   * has ended and nothing watches any more.
   */
  watch(watcher: AbortWatcher): void {
    if (this.signals.length === 0) return
    ;(this.#watchers ??= new Set()).add(watcher)
    if (!this.#onAbort) {
      const onAbort = (event: Event): void => {
        const reason = (event.target as AbortSignal).reason
        for (const each of [...(this.#watchers ?? [])]) each.onAbort(reason)
      }
      this.#onAbort = onAbort
      for (const signal of this.signals) signal.addEventListener('abort', onAbort)
    }
  }

  unwatch(watcher: AbortWatcher): void {
    if (this.#watchers?.delete(watcher) && !this.#scopeOpen && this.#watchers.size === 0) this.#stopListening()
  }

  /** Called when the function given to withQueryContext has settled. */
  endScope(): void {
    this.#scopeOpen = false
    if (!this.#watchers || this.#watchers.size === 0) this.#stopListening()
  }

  #stopListening(): void {
    const onAbort = this.#onAbort
    if (!onAbort) return
    this.#onAbort = undefined
    for (const signal of this.signals) signal.removeEventListener('abort', onAbort)
  }
}

const storage = new AsyncLocalStorage<QueryContext>()

/**
 * Runs `fn` with a query context: every query started inside it, however deep,
 * carries the context's deadline, signal, criticality and domain. A nested
 * context can only shorten the deadline; its signal is combined with the outer
 * ones; criticality and domain are inherited unless given.
 *
 * Throws {@link InvalidOptionError} synchronously for malformed options, before `fn` runs.
 *
 * @example
 * ```ts
 * app.get('/orders/:id', (req, res) =>
 *   withQueryContext({ signal: req.signal, timeoutMs: 800, criticality: 'critical' }, async () => {
 *     res.json(await db.selectFrom('orders').where('id', '=', req.params.id).selectAll().executeTakeFirst())
 *   }),
 * )
 * ```
 */
export function withQueryContext<T>(options: QueryContextOptions, fn: () => T): T {
  const context = createQueryContext(options, storage.getStore())
  // Ending the scope only removes signal listeners: a context without signals skips it.
  if (context.signals.length === 0) return storage.run(context, fn)
  let result: T
  try {
    result = storage.run(context, fn)
  } catch (error) {
    context.endScope()
    throw error
  }
  if (isPromiseLike(result)) {
    result.then(
      () => context.endScope(),
      () => context.endScope(),
    )
  } else {
    context.endScope()
  }
  return result
}

/**
 * The context of the code that calls it, or `undefined` outside any
 * `withQueryContext`.
 *
 * @example
 * ```ts
 * const remainingMs = (currentQueryContext()?.deadline ?? Infinity) - performance.now()
 * ```
 */
export function currentQueryContext(): QueryContext | undefined {
  return storage.getStore()
}

function createQueryContext(options: QueryContextOptions, parent: QueryContext | undefined): QueryContext {
  if (options === null || typeof options !== 'object') {
    throw new InvalidOptionError('options', `must be an object; got ${describe(options)}`)
  }
  const { signal, timeoutMs, deadline, criticality, domain, retry } = options
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new InvalidOptionError('signal', `must be an AbortSignal; got ${describe(signal)}`)
  }
  if (timeoutMs !== undefined) assertTimeoutMs(timeoutMs, 'timeoutMs')
  if (criticality !== undefined) assertCriticality(criticality, 'criticality')
  if (domain !== undefined) assertDomain(domain, 'domain')
  const ownRetry = resolveQueryRetry(retry, 'retry')

  let ownDeadline = Infinity
  if (timeoutMs !== undefined) ownDeadline = now() + timeoutMs
  if (deadline !== undefined) {
    const epochMs = deadline instanceof Date ? deadline.getTime() : deadline
    if (typeof epochMs !== 'number' || !Number.isFinite(epochMs)) {
      throw new InvalidOptionError('deadline', `must be a valid Date or finite epoch milliseconds; got ${describe(deadline)}`)
    }
    ownDeadline = Math.min(ownDeadline, monotonicFromWallClock(epochMs))
  }

  return new QueryContext(
    Math.min(parent?.deadline ?? Infinity, ownDeadline),
    combinedSignals(parent?.signals ?? NO_SIGNALS, signal),
    criticality ?? parent?.criticality,
    domain ?? parent?.domain,
    nestedQueryRetry(parent?.retry, ownRetry),
  )
}

/** Shared by every context without a signal: most have none, and each would otherwise allocate and freeze an empty array. */
const NO_SIGNALS: readonly AbortSignal[] = Object.freeze([])

function combinedSignals(inherited: readonly AbortSignal[], signal: AbortSignal | undefined): readonly AbortSignal[] {
  if (!signal || inherited.includes(signal)) return inherited
  return Object.freeze([...inherited, signal])
}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | null)?.then === 'function'
}
