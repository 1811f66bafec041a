import pg from 'pg'
import { startTestServer } from '../../test/support/test-server.js'

/** The Postgres a bench runs against. */
export interface BenchServer {
  readonly url: string
  readonly source: string
  readonly version: string
  readonly maxConnections: number
  stop(): Promise<void>
}

/**
 * Starts the bench's server through the tests' `startTestServer()`:
 * `PG_BENCH_URL` (passed on as `PG_TEST_URL`) when set, else an embedded
 * PostgreSQL 18 with max_connections 500. Docker is skipped unless `PG_BENCH_DOCKER=1`, so that a
 * missing daemon costs no probe time and no container networking adds noise.
 */
export async function startBenchServer(): Promise<BenchServer> {
  const benchUrl = process.env['PG_BENCH_URL']
  if (benchUrl) process.env['PG_TEST_URL'] = benchUrl
  if (process.env['PG_BENCH_DOCKER'] !== '1') process.env['PG_TEST_NO_DOCKER'] ??= '1'
  // Room for several setups' full pools side by side (overhead.ts with BENCH_NODES runs 4 per Node line).
  const server = await startTestServer({ embeddedFlags: ['-c', 'max_connections=500'] })
  const client = new pg.Client({ connectionString: server.url })
  await client.connect()
  try {
    const { rows } = await client.query<{ server_version: string; max_connections: string }>(
      `select current_setting('server_version') as server_version, current_setting('max_connections') as max_connections`,
    )
    return {
      url: server.url,
      source: server.source,
      version: rows[0]?.server_version ?? 'unknown',
      maxConnections: Number(rows[0]?.max_connections),
      stop: () => server.stop(),
    }
  } finally {
    await client.end()
  }
}
