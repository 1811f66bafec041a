import { describe, expect, it } from 'vitest'
import { StatementTimeoutCache } from '../../src/session/statement-timeout-cache.js'

function applying(cache: StatementTimeoutCache, step: number | 'default', status: 'I' | 'T' | 'E') {
  const change = cache.change(step, status)
  if (change) cache.applied(change)
  return change
}

describe('StatementTimeoutCache (no server)', () => {
  it('asks for a session SET once per step, then nothing while the step stays', () => {
    const cache = new StatementTimeoutCache()
    expect(applying(cache, 1_000, 'I')).toEqual({ value: 1_000, local: false })
    expect(cache.change(1_000, 'I')).toBeUndefined()
    expect(applying(cache, 2_000, 'I')).toEqual({ value: 2_000, local: false })
    expect(applying(cache, 'default', 'I')).toEqual({ value: 'default', local: false })
    expect(cache.change('default', 'I')).toBeUndefined()
  })

  it('starts at the server default: a statement without a budget sends nothing', () => {
    expect(new StatementTimeoutCache().change('default', 'I')).toBeUndefined()
  })

  it('uses SET LOCAL inside a transaction, and forgets it when the transaction ends', () => {
    const cache = new StatementTimeoutCache()
    applying(cache, 1_000, 'I')
    expect(cache.change(1_000, 'T')).toBeUndefined() // the session value holds inside the transaction too
    expect(applying(cache, 500, 'T')).toEqual({ value: 500, local: true })
    expect(cache.change(500, 'T')).toBeUndefined()
    // Back outside: the session still has 1000, the local 500 is gone.
    expect(cache.change(1_000, 'I')).toBeUndefined()
    expect(applying(cache, 500, 'T')).toEqual({ value: 500, local: true })
  })

  it('sends nothing in a failed transaction, where any SET would fail', () => {
    const cache = new StatementTimeoutCache()
    expect(cache.change(1_000, 'E')).toBeUndefined()
  })

  it('no longer trusts a SET LOCAL after ROLLBACK TO SAVEPOINT', () => {
    const cache = new StatementTimeoutCache()
    applying(cache, 500, 'T')
    cache.savepointRolledBack()
    expect(cache.change(500, 'T')).toEqual({ value: 500, local: true })
  })

  it('keeps a stricter value the caller set on the session, and gives way to a looser one', () => {
    const cache = new StatementTimeoutCache()
    cache.callerSet('set', 300, 'I')
    expect(cache.change(1_000, 'I')).toBeUndefined() // 300 is in force and stricter than the 1 s step
    expect(cache.change('default', 'I')).toBeUndefined()
    cache.callerSet('set', 5_000, 'I')
    expect(cache.change(1_000, 'I')).toEqual({ value: 1_000, local: false })
    cache.callerSet('reset', 0, 'I')
    expect(cache.change('default', 'I')).toBeUndefined()
    expect(cache.change(1_000, 'I')).toEqual({ value: 1_000, local: false })
  })

  it('keeps a caller SET LOCAL for its transaction only', () => {
    const cache = new StatementTimeoutCache()
    cache.callerSet('set_local', 200, 'T')
    expect(cache.change(1_000, 'T')).toBeUndefined()
    expect(cache.change(1_000, 'I')).toEqual({ value: 1_000, local: false })
  })

  it('treats a caller value of 0 (off) as no limit of theirs', () => {
    const cache = new StatementTimeoutCache()
    cache.callerSet('set', 0, 'I')
    expect(cache.change(1_000, 'I')).toEqual({ value: 1_000, local: false })
  })

  it('recognises the caller commands it must learn from', () => {
    expect(StatementTimeoutCache.isCallerCommand('SET statement_timeout = 5')).toBe(true)
    expect(StatementTimeoutCache.isCallerCommand(' set local statement_timeout to 5')).toBe(true)
    expect(StatementTimeoutCache.isCallerCommand('reset all')).toBe(true)
    expect(StatementTimeoutCache.isCallerCommand('discard all')).toBe(true)
    expect(StatementTimeoutCache.isCallerCommand("select 'set statement_timeout'")).toBe(false)
    expect(StatementTimeoutCache.callerCommandOf('set local statement_timeout to 5')).toBe('set_local')
    expect(StatementTimeoutCache.callerCommandOf('set statement_timeout to default')).toBe('reset')
    expect(StatementTimeoutCache.callerCommandOf('discard all')).toBe('reset')
    expect(StatementTimeoutCache.callerCommandOf('set session statement_timeout to 5')).toBe('set')
  })
})
