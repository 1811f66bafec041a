import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { TestProject } from 'vitest/node'

let child: ChildProcess | undefined

export async function setup(project: TestProject): Promise<void> {
  const script = fileURLToPath(new URL('./server-process.ts', import.meta.url))
  child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['pipe', 'pipe', 'inherit'] })
  const { url, source } = await firstLine(child)
  const { rows } = await query(url, 'show server_version')
  console.log(`[pg-governor tests] PostgreSQL ${rows[0]?.server_version} from ${source}`)
  project.provide('pgUrl', url)
}

export async function teardown(): Promise<void> {
  const running = child
  if (!running || running.exitCode !== null) return
  const exited = new Promise((resolve) => running.once('exit', resolve))
  running.kill('SIGTERM')
  await exited
}

function firstLine(process: ChildProcess): Promise<{ url: string; source: string }> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: process.stdout as NodeJS.ReadableStream })
    lines.once('line', (line) => {
      lines.close()
      resolve(JSON.parse(line) as { url: string; source: string })
    })
    process.once('exit', (code) => reject(new Error(`the test server process exited with code ${code} before it was ready`)))
  })
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
