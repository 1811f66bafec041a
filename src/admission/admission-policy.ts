import type { Criticality } from '../context/criticality.js'
import { InvalidOptionError } from '../errors/invalid-option-error.js'

/**
 * How admission sheds load.
 *
 * @example
 * ```ts
 * const admission: AdmissionOptions = {
 *   utilisationThresholds: { sheddable: 0.7, sheddable_plus: 0.85 },
 *   reserve: 2,
 * }
 * ```
 */
export interface AdmissionOptions {
  /**
   * Utilisation, `(connections in use + waiters) / max`, at which each level is
   * refused. Defaults: sheddable 0.8, sheddable_plus 0.9, critical `null`
   * (never by utilisation, only when its deadline cannot be met). critical_plus
   * is never shed. A level's threshold may not be below a lower level's, so a
   * level is refused only when every lower level already is.
   */
  readonly utilisationThresholds?:
    | {
        readonly sheddable?: number | null | undefined
        readonly sheddable_plus?: number | null | undefined
        readonly critical?: number | null | undefined
      }
    | undefined
  /** Connections only critical and critical_plus may take (like PgBouncer's reserve pool). Default 0. */
  readonly reserve?: number | undefined
  /** Waiters at most; beyond it everything but critical_plus is shed with reason `queue`. Default 1000. */
  readonly maxWaiting?: number | undefined
  /** Refuse at once when the predicted wait plus run time exceeds the budget. Default true. */
  readonly feasibility?: boolean | undefined
}

/** Thresholds by criticality rank (0 = critical_plus): Infinity where the level is never shed by utilisation. */
export interface ResolvedAdmissionPolicy {
  readonly thresholds: readonly [number, number, number, number]
  readonly reserve: number
  readonly maxWaiting: number
  readonly feasibility: boolean
}

/**
 * @example
 * ```ts
 * new GovernedPostgresDialect({ pool, admission: { utilisationThresholds: { ...DEFAULT_UTILISATION_THRESHOLDS, sheddable: 0.7 } } })
 * ```
 */
export const DEFAULT_UTILISATION_THRESHOLDS: Readonly<Record<Exclude<Criticality, 'critical_plus'>, number | null>> = Object.freeze({
  sheddable: 0.8,
  sheddable_plus: 0.9,
  critical: null,
})

export function resolveAdmissionPolicy(options: AdmissionOptions = {}): ResolvedAdmissionPolicy {
  if (options === null || typeof options !== 'object') {
    throw new InvalidOptionError('admission', 'must be an object')
  }
  const given = options.utilisationThresholds ?? {}
  const threshold = (level: 'sheddable' | 'sheddable_plus' | 'critical'): number => {
    const value = given[level] === undefined ? DEFAULT_UTILISATION_THRESHOLDS[level] : given[level]
    if (value === null) return Infinity
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
      throw new InvalidOptionError(`admission.utilisationThresholds.${level}`, `must be a positive number or null; got ${String(value)}`)
    }
    return value
  }
  const sheddable = threshold('sheddable')
  const sheddablePlus = threshold('sheddable_plus')
  const critical = threshold('critical')
  if (!(sheddable <= sheddablePlus && sheddablePlus <= critical)) {
    throw new InvalidOptionError(
      'admission.utilisationThresholds',
      `must not decrease with criticality (sheddable <= sheddable_plus <= critical); got ${sheddable}, ${sheddablePlus}, ${critical}`,
    )
  }
  const { reserve = 0, maxWaiting = 1_000, feasibility = true } = options
  if (!Number.isInteger(reserve) || reserve < 0) {
    throw new InvalidOptionError('admission.reserve', `must be a whole number >= 0; got ${String(reserve)}`)
  }
  if (!Number.isInteger(maxWaiting) || maxWaiting < 1) {
    throw new InvalidOptionError('admission.maxWaiting', `must be a whole number >= 1; got ${String(maxWaiting)}`)
  }
  if (typeof feasibility !== 'boolean') {
    throw new InvalidOptionError('admission.feasibility', `must be a boolean; got ${String(feasibility)}`)
  }
  return Object.freeze({ thresholds: Object.freeze([Infinity, critical, sheddablePlus, sheddable] as const), reserve, maxWaiting, feasibility })
}
