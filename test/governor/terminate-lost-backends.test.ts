import pg from 'pg'
import { afterEach, describe, expect, it } from 'vitest'
import { terminateLostBackendsWith } from '../../src/governor/lost-backend-hold.js'
import { waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()
const control = { query: <R>(sql: string, parameters?: readonly unknown[]) => database.admin(sql, parameters?.slice()) as Promise<R[]> }
const clients: pg.Client[] = []
afterEach(async () => {
  await Promise.all(clients.splice(0).map((client) => client.end().catch(() => {})))
})

async function backend(): Promise<{ readonly client: pg.Client; readonly pid: number; readonly ended: Promise<void> }> {
  const client = new pg.Client({ connectionString: database.url, application_name: 'lost-backend-test' })
  const ended = new Promise<void>((resolve) => client.on('end', () => resolve()))
  client.on('error', () => {})
  await client.connect()
  clients.push(client)
  return { client, pid: (client as unknown as { processID: number }).processID, ended }
}

async function exists(pid: number): Promise<boolean> {
  return (await database.admin(`select 1 from pg_stat_activity where pid = $1`, [pid])).length > 0
}

describe('terminateLostBackendsWith: the look at the server for a lost backend', () => {
  it('terminates a backend as old as the session that lost it, and reports it still there until it has exited', async () => {
    const lost = await backend()
    const running = lost.client.query('select pg_sleep(30)').catch((error: unknown) => error)
    const terminate = terminateLostBackendsWith(control)
    expect([...(await terminate([{ pid: lost.pid, minAgeMs: 0 }]))]).toEqual([lost.pid])
    expect(((await running) as { code?: string }).code).toBe('57P01')
    await waitFor('the backend to exit', async () => !(await exists(lost.pid)))
    expect([...(await terminate([{ pid: lost.pid, minAgeMs: 0 }]))]).toEqual([])
  })

  it('leaves alone a backend younger than the session (another one, reusing the pid), and takes ours for gone', async () => {
    const other = await backend()
    const terminate = terminateLostBackendsWith(control)
    // As if our session had been made a minute ago: a backend with this pid that started since is not ours.
    expect([...(await terminate([{ pid: other.pid, minAgeMs: 60_000 }]))]).toEqual([])
    expect(await exists(other.pid)).toBe(true)
    expect((await other.client.query('select 1 as n')).rows).toEqual([{ n: 1 }])
  })
})
