import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { activeWithTag, waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()
const fixture = fileURLToPath(new URL('./fixtures/dying-client.ts', import.meta.url))

describe('invariant 3: the client process dies mid-query', () => {
  it('the server stops the statement by its statement_timeout, one ladder step after the deadline', async () => {
    const tag = 'dying_client_query'
    const child = spawn(process.execPath, ['--import', 'tsx', fixture, database.url, tag], { stdio: 'ignore' })
    try {
      const [pid] = await waitFor('the child query to run', async () => {
        const pids = await activeWithTag(database, tag)
        return pids.length > 0 && pids
      }, 20_000)
      const [{ query_start }] = (await database.admin(`select query_start from pg_stat_activity where pid = $1`, [pid])) as [{ query_start: Date }]
      expect(query_start).toBeInstanceOf(Date)
      child.kill('SIGKILL')
      // The statement sleeps 10 s; the 300 ms deadline maps to the 500 ms step.
      await waitFor('the backend to stop', async () => (await activeWithTag(database, tag)).length === 0, 9_000)
      const [{ ranMs }] = (await database.admin(`select extract(epoch from clock_timestamp() - $1::timestamptz) * 1000 as "ranMs"`, [query_start])) as [
        { ranMs: string },
      ]
      // An upper bound (we polled after it stopped): far below the 10 s it would otherwise run.
      expect(Number(ranMs)).toBeLessThan(3_000)
      const leftovers = await database.admin(`select pid from pg_stat_activity where application_name = 'dying-client'`)
      expect(leftovers).toEqual([])
    } finally {
      child.kill('SIGKILL')
    }
  })
})
