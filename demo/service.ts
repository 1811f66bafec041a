/**
 * What the load runner and the live view need of a service under test,
 * whichever dialect it runs on.
 */

/** The pool's gauges at one moment. */
export interface PoolGauge {
  readonly used: number
  readonly idle: number
  readonly max: number
  /** Callers waiting for a connection: the dialect's admission queue, or pg-pool's own queue. */
  readonly waiting: number
  /** `(used + waiting) / max`. */
  readonly utilisation: number
  /** The most critical level refused right now (`none`), or undefined when the setup has no admission control. */
  readonly shedding: string | undefined
  /** Circuit breaker state, or undefined when there is none. */
  readonly circuit: string | undefined
  /** Server-side cancels sent so far, or undefined when the setup sends none. */
  readonly cancels: number | undefined
}

export interface DemoService {
  /** Short name for tables: `pg-governor`, `plain Kysely`. */
  readonly name: string
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  gauge(): PoolGauge
  /** Stops the HTTP server and destroys the Kysely instance (and its pool). */
  close(): Promise<void>
}
