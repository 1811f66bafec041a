import { spawn, type ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import type { TestProject } from 'vitest/node'
import { TestServerUnavailableError, type TestServer } from './test-server.js'

let running: TestServer | undefined

export async function setup(project: TestProject): Promise<void> {
  running = await startServerProcess()
  const { rows } = await query(running.url, 'show server_version')
  const line = `PostgreSQL ${rows[0]?.server_version} from ${running.source}`
  console.log(`[pg-governor tests] ${line}`)
  // For CI, which checks that a run meant for one source did take its server there.
  const sourceFile = process.env['PG_TEST_SOURCE_FILE']
  if (sourceFile) writeFileSync(sourceFile, `${line}\n`)
  project.provide('pgUrl', running.url)
}

export async function teardown(): Promise<void> {
  await running?.stop()
}

/**
 * Starts server-process.ts (the suite's one source of a server: PG_TEST_URL,
 * testcontainers, embedded) in a child process and waits for its first line.
 * Throws TestServerUnavailableError with the child's own explanation when it
 * cannot get a server, so vitest prints what to do rather than an exit code.
 *
 * @example
 * const server = await startServerProcess({ ...process.env, PG_TEST_NO_DOCKER: '1' })
 * try { console.log(server.url) } finally { await server.stop() }
 */
export async function startServerProcess(env: NodeJS.ProcessEnv = process.env): Promise<TestServer> {
  const script = fileURLToPath(new URL('./server-process.ts', import.meta.url))
  const child = spawn(process.execPath, ['--import', 'tsx', script], { stdio: ['pipe', 'pipe', 'inherit'], env })
  const line = await firstLine(child)
  if ('error' in line) throw new TestServerUnavailableError(line.error)
  return { url: line.url, source: line.source, stop: () => stopChild(child) }
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  await exited
}

type ServerLine = { url: string; source: TestServer['source'] } | { error: string }

function firstLine(child: ChildProcess): Promise<ServerLine> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream })
    let settled = false
    lines.once('line', (line) => {
      settled = true
      lines.close()
      resolve(JSON.parse(line) as ServerLine)
    })
    // Its stdout ended without a line: the process died. Waiting for the end of stdout, not for 'exit', keeps a
    // last line written just before exit from being lost.
    lines.once('close', () => {
      if (settled) return
      const report = (): void => reject(new Error(`the test server process ended (${child.exitCode ?? child.signalCode}) before it was ready`))
      if (child.exitCode === null && child.signalCode === null) child.once('exit', report)
      else report()
    })
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
