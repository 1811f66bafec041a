/**
 * Zombie backends: backends still running a query for an HTTP request whose
 * client has already gone (it gave up, aborted, or already has its answer).
 * Nobody will read what they compute, yet each holds a connection and a
 * backend.
 *
 * A monitor connection of its own samples pg_stat_activity every
 * SAMPLE_INTERVAL_MS. Each demo query carries `/* demo-req:<id> *\/`, so every
 * active backend maps to its request; a backend counts as a zombie when its
 * client was done before the sample was taken. Backend-seconds are the usual
 * sampling estimate: each zombie seen counts for the time since the previous
 * sample.
 */
import type pg from 'pg'
import { SAMPLE_INTERVAL_MS } from './config.js'
import { QUERY_TAG_PREFIX } from './routes.js'

export interface ZombieStats {
  /** Backends running a demo query at the last sample. */
  readonly active: number
  /** Of those, zombies. */
  readonly zombies: number
  /** Most zombies seen in one sample. */
  readonly peak: number
  /** Distinct requests whose query was seen running after their client had gone. */
  readonly queries: number
  /** Zombie backends integrated over time. */
  readonly backendSeconds: number
  readonly samples: number
}

const SAMPLE_SQL = `
  select query
    from pg_stat_activity
   where datname = $1 and state = 'active' and pid <> pg_backend_pid() and strpos(query, $2) > 0`

const TAG = new RegExp(`${QUERY_TAG_PREFIX}(\\d+)`)

export class ZombieSampler {
  readonly #client: pg.Client
  readonly #databaseName: string
  readonly #settledAt: (requestId: number) => number | undefined
  readonly #zombieIds = new Set<number>()
  #active = 0
  #zombies = 0
  #peak = 0
  #backendSeconds = 0
  #samples = 0
  #previousAt: number | undefined
  #running = false
  #loop: Promise<void> | undefined

  /** `settledAt(id)`: performance.now() when request `id`'s client was done with it, undefined while it waits. */
  constructor(client: pg.Client, databaseName: string, settledAt: (requestId: number) => number | undefined) {
    this.#client = client
    this.#databaseName = databaseName
    this.#settledAt = settledAt
  }

  stats(): ZombieStats {
    return {
      active: this.#active,
      zombies: this.#zombies,
      peak: this.#peak,
      queries: this.#zombieIds.size,
      backendSeconds: this.#backendSeconds,
      samples: this.#samples,
    }
  }

  start(): void {
    if (this.#running) return
    this.#running = true
    this.#loop = this.#run()
  }

  /** Stops after the sample in progress (and takes one last one). */
  async stop(): Promise<ZombieStats> {
    this.#running = false
    await this.#loop
    await this.#sample()
    return this.stats()
  }

  async #run(): Promise<void> {
    while (this.#running) {
      const started = performance.now()
      await this.#sample()
      const wait = SAMPLE_INTERVAL_MS - (performance.now() - started)
      if (wait > 0 && this.#running) await new Promise((resolve) => setTimeout(resolve, wait))
    }
  }

  async #sample(): Promise<void> {
    // Only clients done before the snapshot was requested count: the answer may not outrun the sample.
    const takenAt = performance.now()
    const { rows } = await this.#client.query<{ query: string }>(SAMPLE_SQL, [this.#databaseName, `/* ${QUERY_TAG_PREFIX}`])
    let zombies = 0
    for (const { query } of rows) {
      const id = Number(TAG.exec(query)?.[1])
      const settledAt = this.#settledAt(id)
      if (settledAt !== undefined && settledAt < takenAt) {
        zombies++
        this.#zombieIds.add(id)
      }
    }
    const since = this.#previousAt === undefined ? SAMPLE_INTERVAL_MS : Math.min(takenAt - this.#previousAt, 4 * SAMPLE_INTERVAL_MS)
    this.#previousAt = takenAt
    this.#backendSeconds += (zombies * since) / 1000
    this.#active = rows.length
    this.#zombies = zombies
    this.#peak = Math.max(this.#peak, zombies)
    this.#samples++
  }
}

/** Waits until no demo query runs in the database (at most `timeoutMs`); returns how many still run. */
export async function waitForNoDemoQueries(client: pg.Client, databaseName: string, timeoutMs: number): Promise<number> {
  const until = performance.now() + timeoutMs
  for (;;) {
    const { rows } = await client.query<{ query: string }>(SAMPLE_SQL, [databaseName, `/* ${QUERY_TAG_PREFIX}`])
    if (rows.length === 0 || performance.now() > until) return rows.length
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}
