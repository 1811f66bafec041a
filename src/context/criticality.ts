import { InvalidOptionError } from '../errors/invalid-option-error.js'

/**
 * How much a query matters, highest first (the four levels of Google's SRE book).
 * A level is refused only when every lower level is already being refused.
 *
 * @example
 * ```ts
 * await withQueryContext({ criticality: 'sheddable' }, () => buildReport(db))
 * ```
 */
export type Criticality = 'critical_plus' | 'critical' | 'sheddable_plus' | 'sheddable'

/**
 * Every criticality, highest first.
 *
 * @example
 * ```ts
 * for (const level of CRITICALITIES) console.log(level) // critical_plus, critical, sheddable_plus, sheddable
 * ```
 */
export const CRITICALITIES: readonly Criticality[] = Object.freeze([
  'critical_plus',
  'critical',
  'sheddable_plus',
  'sheddable',
])

/**
 * The criticality of a query that names none, as in the SRE book: `critical`.
 *
 * @example
 * ```ts
 * new GovernedPostgresDialect({ pool, defaultCriticality: DEFAULT_CRITICALITY })
 * ```
 */
export const DEFAULT_CRITICALITY: Criticality = 'critical'

/** 0 for the highest level; lower numbers are served first. */
export function criticalityRank(criticality: Criticality): number {
  switch (criticality) {
    case 'critical_plus':
      return 0
    case 'critical':
      return 1
    case 'sheddable_plus':
      return 2
    case 'sheddable':
      return 3
  }
}

export function assertCriticality(value: unknown, option: string): asserts value is Criticality {
  if (typeof value !== 'string' || !(CRITICALITIES as readonly string[]).includes(value)) {
    throw new InvalidOptionError(option, `must be one of ${CRITICALITIES.join(', ')}; got ${JSON.stringify(value)}`)
  }
}
