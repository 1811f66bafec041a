/**
 * Samples pg_stat_activity on a monitor connection of its own, for the
 * backends running a tagged statement: each statement carries
 * `/* <marker><tag> *\/` in its text, so that a sample says which request
 * each busy backend is working for.
 */
import type pg from 'pg'
import { sleep } from './run.js'

/** A backend seen running a tagged statement. */
export interface TaggedBackend {
  readonly pid: number
  /** The text between the marker and the closing `*\/`. */
  readonly tag: string
  /** pg_stat_activity.query_start, server clock, epoch ms. */
  readonly queryStartMs: number
}

/** One pg_stat_activity snapshot. */
export interface ActivitySample {
  /** clock_timestamp() when the snapshot was taken, server clock, epoch ms. */
  readonly serverMs: number
  /** The previous snapshot's serverMs, undefined for the first one. */
  readonly previousServerMs: number | undefined
  readonly backends: readonly TaggedBackend[]
}

const SAMPLE_SQL = `
  select s.snap_ms, a.pid, (extract(epoch from a.query_start) * 1000)::float8 as query_start_ms,
         substring(a.query from strpos(a.query, $1) + length($1) for 80) as tail
    from (select (extract(epoch from clock_timestamp()) * 1000)::float8 as snap_ms) s
    left join pg_stat_activity a
      on a.state = 'active' and a.pid <> pg_backend_pid() and strpos(a.query, $1) > 0`

interface SampleRow {
  snap_ms: number
  pid: number | null
  query_start_ms: number | null
  tail: string | null
}

/**
 * Polls every `intervalMs` (the next poll starts `intervalMs` after the
 * previous one started, or at once when a poll took longer) until stopped.
 */
export class ActivitySampler {
  readonly #client: pg.Client
  readonly #marker: string
  readonly #intervalMs: number
  readonly #onSample: (sample: ActivitySample) => void
  #running = false
  #loop: Promise<void> | undefined
  #previous: number | undefined
  #count = 0
  #maxGapMs = 0
  #firstMs = NaN
  #lastMs = NaN

  constructor(client: pg.Client, marker: string, intervalMs: number, onSample: (sample: ActivitySample) => void) {
    this.#client = client
    this.#marker = marker
    this.#intervalMs = intervalMs
    this.#onSample = onSample
  }

  start(): void {
    if (this.#running) return
    this.#running = true
    this.#loop = this.#run()
  }

  async stop(): Promise<void> {
    this.#running = false
    await this.#loop
  }

  /** Samples taken, their mean interval and the longest gap between two, in ms (server clock). */
  get stats(): { readonly samples: number; readonly meanIntervalMs: number; readonly maxGapMs: number } {
    return { samples: this.#count, meanIntervalMs: this.#count > 1 ? (this.#lastMs - this.#firstMs) / (this.#count - 1) : NaN, maxGapMs: this.#maxGapMs }
  }

  /** One snapshot now, outside the loop (does not feed `onSample`). */
  async once(): Promise<ActivitySample> {
    return this.#take(undefined)
  }

  async #run(): Promise<void> {
    while (this.#running) {
      const t0 = performance.now()
      const sample = await this.#take(this.#previous)
      if (this.#previous !== undefined) this.#maxGapMs = Math.max(this.#maxGapMs, sample.serverMs - this.#previous)
      if (this.#count === 0) this.#firstMs = sample.serverMs
      this.#lastMs = sample.serverMs
      this.#previous = sample.serverMs
      this.#count++
      this.#onSample(sample)
      const wait = t0 + this.#intervalMs - performance.now()
      if (wait > 0 && this.#running) await sleep(wait)
    }
  }

  async #take(previousServerMs: number | undefined): Promise<ActivitySample> {
    const { rows } = await this.#client.query<SampleRow>({ name: 'bench_activity_sample', text: SAMPLE_SQL, values: [this.#marker] })
    const serverMs = rows[0]?.snap_ms ?? NaN
    const backends: TaggedBackend[] = []
    for (const row of rows) {
      if (row.pid === null || row.tail === null) continue
      const end = row.tail.indexOf(' */')
      backends.push({ pid: row.pid, tag: end >= 0 ? row.tail.slice(0, end) : row.tail, queryStartMs: row.query_start_ms ?? NaN })
    }
    return { serverMs, previousServerMs, backends }
  }
}

/** Client backends on the server other than the caller's own: how many, and how many are running a statement. */
export async function serverBackends(client: pg.Client): Promise<{ readonly total: number; readonly active: number; readonly activeQueries: string[] }> {
  const { rows } = await client.query<{ state: string | null; query: string | null }>(
    `select state, left(query, 120) as query from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid()`,
  )
  const active = rows.filter((r) => r.state === 'active')
  return { total: rows.length, active: active.length, activeQueries: active.map((r) => r.query ?? '') }
}
