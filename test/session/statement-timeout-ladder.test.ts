import { describe, expect, it } from 'vitest'
import { DEFAULT_STATEMENT_TIMEOUT_LADDER_MS, InvalidOptionError, StatementTimeoutLadder } from '../../src/index.js'

describe('StatementTimeoutLadder', () => {
  const ladder = new StatementTimeoutLadder()

  it('gives the smallest step at or above the budget', () => {
    expect(ladder.bucketFor(0.5)).toBe(100)
    expect(ladder.bucketFor(100)).toBe(100)
    expect(ladder.bucketFor(100.1)).toBe(250)
    expect(ladder.bucketFor(2_999)).toBe(5_000)
    expect(ladder.bucketFor(3_600_000)).toBe(3_600_000)
    for (let budget = 1; budget < 3_600_000; budget = Math.ceil(budget * 1.37)) {
      const bucket = ladder.bucketFor(budget)
      expect(bucket).toBeGreaterThanOrEqual(budget)
      const index = DEFAULT_STATEMENT_TIMEOUT_LADDER_MS.indexOf(bucket)
      expect(index === 0 || (DEFAULT_STATEMENT_TIMEOUT_LADDER_MS[index - 1] as number) < budget).toBe(true)
    }
  })

  it('rounds past the last step up to whole multiples of it', () => {
    expect(ladder.bucketFor(3_600_001)).toBe(7_200_000)
    expect(ladder.bucketFor(2 ** 31)).toBe(2_147_483_647)
  })

  it.each([[[]], [[0]], [[100, 100]], [[500, 100]], [[1.5]], [[2 ** 31]]])('refuses the ladder %j', (steps) => {
    expect(() => new StatementTimeoutLadder(steps)).toThrow(InvalidOptionError)
  })
})
