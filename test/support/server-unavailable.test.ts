import { mkdtempSync, rmSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startServerProcess } from './global-setup.js'
import { TestServerUnavailableError } from './test-server.js'

// A Docker engine that answers but has no image and cannot pull one: it speaks
// just enough of the Engine API (ping, info, version) for testcontainers to take
// it for a working engine, and refuses everything else as a registry would.
// Docker, not PostgreSQL, is what is faked here; the suite's own server process
// (server-process.ts through startServerProcess, as global-setup runs it) meets it.
const refusal = 'pull access denied for pg-governor/missing, repository does not exist (fake engine)'
let folder: string
let engine: Server
const requests: string[] = []

beforeAll(async () => {
  folder = mkdtempSync(join(tmpdir(), 'pg-governor-fake-docker-'))
  engine = createServer((request, response) => {
    const path = (request.url ?? '').replace(/^\/v[0-9.]+/, '')
    requests.push(`${request.method} ${path}`)
    const answer = (status: number, body: unknown): void => {
      response.writeHead(status, { 'content-type': 'application/json' })
      response.end(JSON.stringify(body))
    }
    if (path.startsWith('/_ping')) return void response.end('OK')
    if (path.startsWith('/info')) {
      return answer(200, { ServerVersion: '0.0.0-fake', OperatingSystem: 'fake', OSType: 'linux', Architecture: 'x86_64', NCPU: 1, MemTotal: 1, Labels: [] })
    }
    if (path.startsWith('/version')) return answer(200, { Version: '0.0.0-fake', ApiVersion: '1.41' })
    answer(404, { message: refusal })
  })
  await new Promise<void>((resolve) => engine.listen(join(folder, 'docker.sock'), resolve))
})

afterAll(async () => {
  await new Promise((resolve) => engine?.close(resolve))
  rmSync(folder, { recursive: true, force: true })
})

describe('the test server when a Docker engine answers but the image cannot be had', () => {
  it('stops the run with a TestServerUnavailableError that names the image, the reason and what to do', async () => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      DOCKER_HOST: `unix://${join(folder, 'docker.sock')}`,
      PG_TEST_IMAGE: 'pg-governor/missing:0',
      TESTCONTAINERS_RYUK_DISABLED: 'true',
      TESTCONTAINERS_HOST_OVERRIDE: '127.0.0.1',
    }
    delete env['PG_TEST_URL']
    delete env['PG_TEST_NO_DOCKER']

    const outcome = await startServerProcess(env).then(
      async (server) => {
        await server.stop()
        return server
      },
      (error: unknown) => error,
    )

    // No quiet fall back to the embedded server: the run was meant to go through Docker.
    expect(outcome).toBeInstanceOf(TestServerUnavailableError)
    const message = (outcome as Error).message
    console.log(`[server-unavailable] the suite says:\n${message}`)
    expect(message).toContain('PostgreSQL could not be started from the image pg-governor/missing:0')
    expect(message).toContain(refusal)
    expect(message).toMatch(/^ {2}PG_TEST_IMAGE=/m)
    expect(message).toMatch(/^ {2}PG_TEST_NO_DOCKER=1/m)
    expect(message).toMatch(/^ {2}PG_TEST_URL=/m)
    // It did ask the engine for the image (and got the refusal above), and started no container.
    expect(requests.some((request) => request.includes('missing'))).toBe(true)
    expect(requests.some((request) => request.startsWith('POST /containers/create'))).toBe(false)
  }, 60_000)
})
