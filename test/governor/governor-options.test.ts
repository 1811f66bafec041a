import { describe, expect, it } from 'vitest'
import { DeadlineExceededError, Governor, InvalidOptionError, resolveGovernorParts, withQueryContext } from '../../src/index.js'
import { waitFor } from '../support/governed.js'
import { useTestDatabase } from '../support/test-database.js'

const database = useTestDatabase()

describe('resolveGovernorParts: the governance options, without Kysely', () => {
  it('builds a governor that runs, bounds and cancels statements with no Kysely in the way', async () => {
    const pool = database.pool({ max: 2 })
    const parts = resolveGovernorParts({ defaultTimeoutMs: 2_000, warmConnections: false }, pool)
    expect(Object.isFrozen(parts)).toBe(true)
    const governor = new Governor(pool, parts)
    try {
      const lease = await governor.acquire()
      try {
        const { rows } = await lease.session.execute<{ n: number }>('select $1::int as n', [7])
        expect(rows).toEqual([{ n: 7 }])
        const late = await withQueryContext({ timeoutMs: 100 }, () => lease.session.execute('select pg_sleep(5)', [])).catch((error: unknown) => error)
        expect(late).toBeInstanceOf(DeadlineExceededError)
      } finally {
        lease.release()
      }
      // The permit comes back once the cancelled statement and its cancel have settled (invariant 2).
      await waitFor('the permit to come back', async () => governor.stats().permits === 0)
      expect(governor.stats()).toMatchObject({ permits: 0, waiting: 0 })
    } finally {
      await governor.end()
    }
  })

  it('refuses a malformed option with a typed error that names it', () => {
    const pool = database.pool({ max: 2 })
    expect(() => resolveGovernorParts({ admission: { reserve: 2 } }, pool)).toThrow(InvalidOptionError)
    expect(() => resolveGovernorParts({ admission: { reserve: 2 } }, pool)).toThrow(/admission\.reserve.*below the pool's max \(2\)/)
    expect(() => resolveGovernorParts({ sqlComment: 'yes' as unknown as boolean })).toThrow(/sqlComment/)
    expect(() => resolveGovernorParts({ defaultTimeoutMs: -1 })).toThrow(InvalidOptionError)
  })
})
