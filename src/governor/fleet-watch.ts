import type { AdmissionGate } from '../admission/admission-gate.js'
import type { GovernorEvents } from '../telemetry/governor-events.js'
import type { ResolvedFleetOptions } from './fleet-options.js'
import { SERVER_LIMITS_SQL, saturationSql, sizeFleet, type ServerLimitsEvent, type ServerLimitsRow } from './server-limits.js'

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
  readonly #gate: AdmissionGate
  readonly #poolMax: number
  readonly #options: ResolvedFleetOptions
  readonly #events: GovernorEvents
  #limits: ServerLimitsEvent | undefined
  #timer: NodeJS.Timeout | undefined
  #sampling = false
  #stopped = false

  constructor(control: ControlQueries, gate: AdmissionGate, poolMax: number, options: ResolvedFleetOptions, events: GovernorEvents) {
    this.#control = control
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
    this.#timer = undefined
    this.#gate.setServerSaturation(0)
  }

  async #readLimits(): Promise<ServerLimitsEvent | undefined> {
    try {
      const [row] = await this.#control.query<ServerLimitsRow>(SERVER_LIMITS_SQL)
      if (!row || this.#stopped) return undefined
      const limits = sizeFleet(row, { poolMax: this.#poolMax, expectedInstances: this.#options.expectedInstances })
      const first = this.#limits === undefined
      this.#limits = limits
      if (first) this.#events.emit('serverLimits', limits)
      return limits
    } catch {
      // No control connection (the server is full, or behind a pooler that refuses the catalog): the next sample tries again.
      return undefined
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
