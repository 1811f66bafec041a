import { InvalidOptionError } from '../errors/invalid-option-error.js'

/**
 * Many instances, one database: how this pool sees the fleet it is part of.
 * Everything runs on the control connection (no extra session).
 *
 * @example
 * ```ts
 * new GovernedPostgresDialect({
 *   pool: new pg.Pool({ connectionString, max: 6, idleTimeoutMillis: 1_000 }),
 *   fleet: { expectedInstances: 4, saturation: { intervalMs: 1_000 } },
 * })
 * ```
 */
export interface FleetOptions {
  /**
   * How many instances (processes) run this pool against the same server.
   * At start the server's limits are read once and a `serverLimits` event
   * (and a warn log line) says when `expectedInstances × (max + 1)` (the
   * pool and its control connection, per instance) cannot fit. Above 1,
   * the pool also opens its connections one at a time until that read has
   * answered, so that a fleet starting together asks the server for its
   * shares rather than for every pool's max. Default 1.
   */
  readonly expectedInstances?: number | undefined
  /** Read the server's limits once at start (needs the eager control connection). Default true. */
  readonly checkServerLimits?: boolean | undefined
  /**
   * Sample the server's saturation (busy application backends / usable
   * slots) on the control connection, and shed by it as by the pool's own
   * utilisation: when the fleet saturates the server, every instance sheds
   * its sheddable work first. Off by default; `true` samples every 1000 ms.
   */
  readonly saturation?: SaturationOptions | boolean | undefined
}

/**
 * Options of saturation sampling.
 *
 * @example
 * ```ts
 * const saturation: SaturationOptions = { intervalMs: 500, capacity: 90 }
 * ```
 */
export interface SaturationOptions {
  /** Between samples. Default 1000 ms, at least 50. */
  readonly intervalMs?: number | undefined
  /**
   * The busy backends that make the server full. Default: the usable slots
   * read at start (max_connections less the reserved ones, or the role's or
   * database's connection limit when lower). Set it to the number of busy
   * backends your server handles well (about its cores, times a small
   * factor) to shed on CPU saturation rather than on slots.
   */
  readonly capacity?: number | undefined
}

/** Validated {@link FleetOptions}. */
export interface ResolvedFleetOptions {
  readonly expectedInstances: number
  readonly checkServerLimits: boolean
  readonly saturation: { readonly intervalMs: number; readonly capacity: number | undefined } | undefined
}

/** The defaults of {@link FleetOptions}. */
export const FLEET_DEFAULTS: ResolvedFleetOptions = Object.freeze({ expectedInstances: 1, checkServerLimits: true, saturation: undefined })

/** Default sampling interval of {@link SaturationOptions}. */
export const DEFAULT_SATURATION_INTERVAL_MS = 1_000

/**
 * Validates the dialect's `fleet` option. Throws {@link InvalidOptionError}.
 *
 * @example
 * ```ts
 * const fleet = resolveFleetOptions({ expectedInstances: 4 })
 * ```
 */
export function resolveFleetOptions(options: FleetOptions | undefined): ResolvedFleetOptions {
  if (options === undefined) return FLEET_DEFAULTS
  if (options === null || typeof options !== 'object') throw new InvalidOptionError('fleet', `must be an object; got ${String(options)}`)
  const { expectedInstances = 1, checkServerLimits = true, saturation } = options
  if (!Number.isInteger(expectedInstances) || expectedInstances < 1) {
    throw new InvalidOptionError('fleet.expectedInstances', `must be a whole number >= 1; got ${String(expectedInstances)}`)
  }
  if (typeof checkServerLimits !== 'boolean') throw new InvalidOptionError('fleet.checkServerLimits', `must be a boolean; got ${String(checkServerLimits)}`)
  return Object.freeze({ expectedInstances, checkServerLimits, saturation: resolveSaturation(saturation) })
}

function resolveSaturation(option: SaturationOptions | boolean | undefined): ResolvedFleetOptions['saturation'] {
  if (option === undefined || option === false) return undefined
  if (option === true) return Object.freeze({ intervalMs: DEFAULT_SATURATION_INTERVAL_MS, capacity: undefined })
  if (option === null || typeof option !== 'object') throw new InvalidOptionError('fleet.saturation', `must be a boolean or an object; got ${String(option)}`)
  const { intervalMs = DEFAULT_SATURATION_INTERVAL_MS, capacity } = option
  if (typeof intervalMs !== 'number' || !Number.isFinite(intervalMs) || intervalMs < 50) {
    throw new InvalidOptionError('fleet.saturation.intervalMs', `must be a number of milliseconds >= 50; got ${String(intervalMs)}`)
  }
  if (capacity !== undefined && (!Number.isInteger(capacity) || capacity < 1)) {
    throw new InvalidOptionError('fleet.saturation.capacity', `must be a whole number >= 1; got ${String(capacity)}`)
  }
  return Object.freeze({ intervalMs, capacity })
}
