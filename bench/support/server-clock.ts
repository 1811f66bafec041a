import type pg from 'pg'

/** Wall-clock milliseconds with sub-millisecond resolution (Date.now() has 1 ms). */
export function wallNow(): number {
  return performance.timeOrigin + performance.now()
}

/** This process's wall clock as `wallNow()` to the server's `clock_timestamp()`. */
export interface ClockOffset {
  /** server = client + offsetMs */
  readonly offsetMs: number
  /** Half the round trip of the best sample: the offset is right within this. */
  readonly uncertaintyMs: number
}

const CLOCK_QUERY = { name: 'bench_server_clock', text: 'select (extract(epoch from clock_timestamp()) * 1000)::float8 as t' }

/**
 * NTP-style estimate on an idle monitor connection: read the server's
 * clock_timestamp() between two local readings and assume it was taken at the
 * midpoint; keep the sample with the shortest round trip.
 */
export async function estimateClockOffset(client: pg.Client, samples = 5): Promise<ClockOffset> {
  let best: ClockOffset | undefined
  for (let i = 0; i < samples; i++) {
    const before = wallNow()
    const { rows } = await client.query<{ t: number }>(CLOCK_QUERY)
    const after = wallNow()
    const server = rows[0]?.t
    if (typeof server !== 'number') throw new Error('server clock query returned no time')
    const sample = { offsetMs: server - (before + after) / 2, uncertaintyMs: (after - before) / 2 }
    if (!best || sample.uncertaintyMs < best.uncertaintyMs) best = sample
  }
  return best as ClockOffset
}
