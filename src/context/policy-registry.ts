import { InvalidOptionError } from '../errors/invalid-option-error.js'
import { resolveQueryRetry, type QueryRetry, type QueryRetryOptions } from '../retry/query-retry-options.js'
import { assertCriticality, DEFAULT_CRITICALITY, type Criticality } from './criticality.js'
import { assertDomain, assertTimeoutMs, describe } from './validate.js'

/**
 * What applies to the queries of one domain.
 *
 * @example
 * ```ts
 * const payment: QueryPolicy = { timeoutMs: 3000, criticality: 'critical' }
 * ```
 */
export interface QueryPolicy {
  /** Budget of each statement (and of each wait for a connection), in milliseconds. */
  readonly timeoutMs?: number | undefined
  /** Criticality of the domain's queries when their context names none. */
  readonly criticality?: Criticality | undefined
  /** How the domain's queries retry when their context says nothing (see `QueryRetryOptions`); `false`: one attempt. */
  readonly retry?: QueryRetryOptions | false | undefined
}

/**
 * A policy with every field decided. `timeoutMs` is `undefined` when queries get no deadline.
 *
 * @example
 * ```ts
 * const { timeoutMs, criticality } = dialect.policies.resolve('report')
 * ```
 */
export interface ResolvedPolicy {
  readonly timeoutMs: number | undefined
  readonly criticality: Criticality
  /** Undefined: the pool's `retry` options apply. */
  readonly retry?: QueryRetry | undefined
}

/**
 * The documented default budget of a statement that has no deadline of its own: 30 seconds.
 *
 * @example
 * ```ts
 * new GovernedPostgresDialect({ pool, defaultTimeoutMs: DEFAULT_TIMEOUT_MS / 3 })
 * ```
 */
export const DEFAULT_TIMEOUT_MS = 30_000

/**
 * The policies by domain, changeable at runtime. A query takes the policy of its
 * context's domain; a query without a domain, or with a domain not registered,
 * takes the defaults.
 *
 * @example
 * ```ts
 * const dialect = new GovernedPostgresDialect({ pool, policies: { report: { timeoutMs: 300_000, criticality: 'sheddable' } } })
 * dialect.policies.set('report', { timeoutMs: 60_000, criticality: 'sheddable' }) // during an incident
 * ```
 */
export class PolicyRegistry {
  readonly #policies = new Map<string, ResolvedPolicy>()
  readonly #defaults: ResolvedPolicy

  constructor(options: {
    readonly defaultTimeoutMs?: number | null | undefined
    readonly defaultCriticality?: Criticality | undefined
    readonly policies?: Readonly<Record<string, QueryPolicy>> | undefined
  } = {}) {
    const { defaultTimeoutMs, defaultCriticality, policies } = options
    if (defaultTimeoutMs !== undefined && defaultTimeoutMs !== null) assertTimeoutMs(defaultTimeoutMs, 'defaultTimeoutMs')
    if (defaultCriticality !== undefined) assertCriticality(defaultCriticality, 'defaultCriticality')
    this.#defaults = Object.freeze({
      timeoutMs: defaultTimeoutMs === null ? undefined : (defaultTimeoutMs ?? DEFAULT_TIMEOUT_MS),
      criticality: defaultCriticality ?? DEFAULT_CRITICALITY,
    })
    if (policies !== undefined) {
      if (policies === null || typeof policies !== 'object') {
        throw new InvalidOptionError('policies', `must be an object of domain to policy; got ${describe(policies)}`)
      }
      // Validate all before storing any, so a bad entry changes nothing.
      const entries = Object.entries(policies).map(([domain, policy]) => [domain, this.#resolve(domain, policy)] as const)
      for (const [domain, policy] of entries) this.#policies.set(domain, policy)
    }
  }

  /** The defaults that apply outside any registered domain. */
  get defaults(): ResolvedPolicy {
    return this.#defaults
  }

  /** The policy a query of `domain` runs under. */
  resolve(domain: string | undefined): ResolvedPolicy {
    return (domain !== undefined && this.#policies.get(domain)) || this.#defaults
  }

  /** Adds or replaces a domain's policy; fields left out take the defaults. */
  set(domain: string, policy: QueryPolicy): void {
    this.#policies.set(domain, this.#resolve(domain, policy))
  }

  delete(domain: string): boolean {
    return this.#policies.delete(domain)
  }

  has(domain: string): boolean {
    return this.#policies.has(domain)
  }

  #resolve(domain: string, policy: QueryPolicy): ResolvedPolicy {
    assertDomain(domain, 'policies')
    const option = `policies.${domain}`
    if (policy === null || typeof policy !== 'object') {
      throw new InvalidOptionError(option, `must be an object; got ${describe(policy)}`)
    }
    if (policy.timeoutMs !== undefined) assertTimeoutMs(policy.timeoutMs, `${option}.timeoutMs`)
    if (policy.criticality !== undefined) assertCriticality(policy.criticality, `${option}.criticality`)
    const retry = resolveQueryRetry(policy.retry, `${option}.retry`)
    return Object.freeze({
      timeoutMs: policy.timeoutMs ?? this.#defaults.timeoutMs,
      criticality: policy.criticality ?? this.#defaults.criticality,
      ...(retry === undefined ? {} : { retry }),
    })
  }
}
