import type { TestProject } from 'vitest/node'
import { startTestServer, type TestServer } from './test-server.js'

let server: TestServer | undefined

export async function setup(project: TestProject): Promise<void> {
  server = await startTestServer()
  const { rows } = await query(server.url, 'show server_version')
  console.log(`[pg-governor tests] PostgreSQL ${rows[0]?.server_version} from ${server.source}`)
  project.provide('pgUrl', server.url)
}

export async function teardown(): Promise<void> {
  await server?.stop()
}

async function query(url: string, sql: string): Promise<{ rows: Record<string, string>[] }> {
  const { default: pg } = await import('pg')
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  try {
    return await client.query(sql)
  } finally {
    await client.end()
  }
}

declare module 'vitest' {
  export interface ProvidedContext {
    pgUrl: string
  }
}
