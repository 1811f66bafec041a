import type { AdmissionGate } from '../admission/admission-gate.js'
import type { GovernorEvents } from '../telemetry/governor-events.js'
import type { ResolvedFleetOptions } from './fleet-options.js'
import { SERVER_LIMITS_SQL, saturationSql, sizeFleet, type ServerLimitsEvent, type ServerLimitsRow } from './server-limits.js'

/** Tries at reading the server's limits before giving up (the control connection could not be had). */
const LIMITS_ATTEMPTS = 30
const LIMITS_RETRY_MS = 1_000

/** Where the fleet's statements run: the canceller's control connection. */
export interface ControlQueries {
  query<R>(sql: string, parameters?: readonly unknown[]): Promise<R[]>
}

/**
 * The fleet's view of one server, through the control connection and
 * nothing else: the server's limits read once at start (a `serverLimits`
 * event says whether this pool's max times the expected instances fits), and,
 * when enabled, the server's saturation sampled at an interval and handed to
 * admission, so that every instance sheds its sheddable work when the fleet
 * together fills the server, coordinated through the database itself.
 *
 * @example
 * ```ts
 * const watch = new FleetWatch(canceller, gate, 10, resolveFleetOptions({ saturation: true }), events)
 * // ... later
 * watch.stop()
 * ```
 */
export class FleetWatch {
  readonly #control: ControlQueries
  readonly #pool: ControlQueries | undefined
  readonly #gate: AdmissionGate
  readonly #poolMax: number
  readonly #options: ResolvedFleetOptions
  readonly #events: GovernorEvents
  #limits: ServerLimitsEvent | undefined
  #timer: NodeJS.Timeout | undefined
  #retry: NodeJS.Timeout | undefined
  #attempts = 0
  #sampling = false
  #stopped = false

  /**
   * `pool` runs a statement on one of the pool's own connections: the
   * fallback for the limits when the control connection cannot be had (a
   * fleet starting together can fill the server before it opens).
   */
  constructor(control: ControlQueries, gate: AdmissionGate, poolMax: number, options: ResolvedFleetOptions, events: GovernorEvents, pool?: ControlQueries) {
    this.#control = control
    this.#pool = pool
    this.#gate = gate
    this.#poolMax = poolMax
    this.#options = options
    this.#events = events
    if (options.checkServerLimits || (options.saturation && options.saturation.capacity === undefined)) void this.#readLimits()
    const saturation = options.saturation
    if (saturation) {
      this.#timer = setInterval(() => void this.#sample(), saturation.intervalMs)
      // Sampling alone keeps nothing alive.
      this.#timer.unref()
    }
  }

  /** The limits read at start, once they are in. */
  get limits(): ServerLimitsEvent | undefined {
    return this.#limits
  }

  stop(): void {
    this.#stopped = true
    if (this.#timer) clearInterval(this.#timer)
    if (this.#retry) clearTimeout(this.#retry)
    this.#timer = undefined
    this.#retry = undefined
    this.#gate.setServerSaturation(0)
  }

  async #readLimits(): Promise<ServerLimitsEvent | undefined> {
    try {
      const [row] = await this.#control.query<ServerLimitsRow>(SERVER_LIMITS_SQL).catch((error: unknown) => {
        if (!this.#pool) throw error
        return this.#pool.query<ServerLimitsRow>(SERVER_LIMITS_SQL)
      })
      if (!row || this.#stopped) return undefined
      const limits = sizeFleet(row, { poolMax: this.#poolMax, expectedInstances: this.#options.expectedInstances })
      const first = this.#limits === undefined
      this.#limits = limits
      // The fleet does not fit: each instance keeps to its share when slots are contended.
      if (!limits.fits) this.#gate.setFairShare(limits.suggestedPoolMax)
      if (first) this.#events.emit('serverLimits', limits)
      return limits
    } catch {
      // No control connection yet (a full server refuses it too, and a fleet starting together fills it):
      // try again a few times, a second apart; the samples, when on, try at each interval.
      if (!this.#stopped && !this.#retry && ++this.#attempts < LIMITS_ATTEMPTS) {
        this.#retry = setTimeout(() => {
          this.#retry = undefined
          void this.#readLimits()
        }, LIMITS_RETRY_MS)
        this.#retry.unref()
      }
      return undefined
    } finally {
      // Known (the share, if any, is set above) or not known for now: a pool still opening one connection
      // at a time stops doing so; without the limits, the server's refusals cap it instead.
      this.#gate.started()
    }
  }

  async #sample(): Promise<void> {
    const saturation = this.#options.saturation
    if (this.#sampling || this.#stopped || !saturation) return
    this.#sampling = true
    try {
      const limits = this.#limits ?? (await this.#readLimits())
      const capacity = saturation.capacity ?? limits?.usableSlots
      if (capacity === undefined || this.#stopped) return
      const [row] = await this.#control.query<{ busy: number }>(saturationSql(saturation.capacity === undefined ? (limits?.limitedBy ?? 'server') : 'server'))
      if (this.#stopped) return
      const busy = Number(row?.busy ?? 0)
      const value = capacity > 0 ? busy / capacity : 1
      this.#gate.setServerSaturation(value)
      if (this.#events.has('saturation')) this.#events.emit('saturation', { busy, capacity, saturation: value })
    } catch {
      // Without a sample the fleet's view is unknown: shed by the pool's own utilisation only.
      this.#gate.setServerSaturation(0)
    } finally {
      this.#sampling = false
    }
  }
}
