import { describe, expect, it } from 'vitest'
import { GovernorError, InvalidOptionError } from '../../src/index.js'
import { resolveGovernedRequestOptions } from '../../src/http/governed-request.js'
import { governorHttpOutcome, findGovernorError, retryAfterSeconds } from '../../src/http/governor-outcome.js'
import {
  InvalidRequestTimeoutError,
  MAX_REQUEST_TIMEOUT_HEADER_LENGTH,
  parseRequestTimeoutHeader,
  resolveRequestTimeout,
  resolveRequestTimeoutOptions,
} from '../../src/http/request-timeout.js'
import { DeadlineExceededError, LoadShedError, QueryCanceledError } from '../../src/index.js'

function reasonOf(value: Parameters<typeof parseRequestTimeoutHeader>[0]): string {
  try {
    parseRequestTimeoutHeader(value)
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidRequestTimeoutError)
    expect(error).toBeInstanceOf(GovernorError)
    expect((error as InvalidRequestTimeoutError).code).toBe('INVALID_REQUEST_TIMEOUT')
    return (error as InvalidRequestTimeoutError).reason
  }
  throw new Error(`expected ${JSON.stringify(value)} to be invalid`)
}

describe('parseRequestTimeoutHeader: the exact rules', () => {
  it.each([
    ['250', 250],
    ['1', 1],
    ['007', 7],
    [' 100', 100],
    ['100\t', 100],
    [['300'], 300],
    ['99999999999999999999', 1e20],
    ['9'.repeat(MAX_REQUEST_TIMEOUT_HEADER_LENGTH), Number('9'.repeat(MAX_REQUEST_TIMEOUT_HEADER_LENGTH))],
  ] as const)('%j is %d', (value, expected) => {
    expect(parseRequestTimeoutHeader(value)).toBe(expected)
  })

  it.each([undefined, null, []] as const)('%j is absent', (value) => {
    expect(parseRequestTimeoutHeader(value)).toBeUndefined()
  })

  it.each([
    ['', 'empty'],
    ['   ', 'empty'],
    ['abc', 'malformed'],
    ['-1', 'malformed'],
    ['+1', 'malformed'],
    ['1.5', 'malformed'],
    ['1e3', 'malformed'],
    ['0x10', 'malformed'],
    ['1 0', 'malformed'],
    ['١٢٣', 'malformed'], // Arabic-Indic digits are not ASCII digits
    ['0', 'zero'],
    ['000', 'zero'],
    ['100, 200', 'multiple'],
    ['100,200', 'multiple'],
    [['100', '200'], 'multiple'],
    ['1'.repeat(10 * 1024), 'too_long'],
    ['x'.repeat(10 * 1024), 'too_long'],
    ['9'.repeat(MAX_REQUEST_TIMEOUT_HEADER_LENGTH + 1), 'too_long'],
  ] as const)('%j is invalid (%s)', (value, reason) => {
    expect(reasonOf(value)).toBe(reason)
  })

  it('keeps a 10 kB value out of the message', () => {
    const error = (() => {
      try {
        parseRequestTimeoutHeader('7'.repeat(10 * 1024))
      } catch (caught) {
        return caught as InvalidRequestTimeoutError
      }
      throw new Error('expected a throw')
    })()
    expect(error.message.length).toBeLessThan(200)
    expect(error.header).toBe('x-request-timeout')
  })
})

describe('resolveRequestTimeout', () => {
  const reject = resolveRequestTimeoutOptions({ defaultTimeoutMs: 1_000, maxTimeoutMs: 5_000 })
  const ignore = resolveRequestTimeoutOptions({ defaultTimeoutMs: 1_000, maxTimeoutMs: 5_000, onInvalidTimeout: 'ignore' })

  it('uses the default when absent, the header when valid, the max when above it', () => {
    expect(resolveRequestTimeout(undefined, reject)).toEqual({ timeoutMs: 1_000, source: 'default', capped: false, invalid: undefined })
    expect(resolveRequestTimeout('2500', reject)).toEqual({ timeoutMs: 2_500, source: 'header', capped: false, invalid: undefined })
    expect(resolveRequestTimeout('99999999999999999999', reject)).toEqual({ timeoutMs: 5_000, source: 'header', capped: true, invalid: undefined })
  })

  it("throws with 'reject' and falls back to the default with 'ignore'", () => {
    expect(() => resolveRequestTimeout('abc', reject)).toThrow(InvalidRequestTimeoutError)
    const ignored = resolveRequestTimeout('abc', ignore)
    expect(ignored).toMatchObject({ timeoutMs: 1_000, source: 'default', capped: false })
    expect(ignored.invalid?.reason).toBe('malformed')
  })

  it('checks its options once, at setup', () => {
    expect(resolveRequestTimeoutOptions({ defaultTimeoutMs: 800 })).toEqual({
      defaultTimeoutMs: 800,
      maxTimeoutMs: 800,
      onInvalidTimeout: 'reject',
      header: 'x-request-timeout',
    })
    expect(resolveRequestTimeoutOptions({ defaultTimeoutMs: 800, header: 'X-Deadline-Ms' }).header).toBe('x-deadline-ms')
    for (const bad of [
      {},
      { defaultTimeoutMs: 0 },
      { defaultTimeoutMs: Infinity },
      { defaultTimeoutMs: 2 ** 31 },
      { defaultTimeoutMs: 1_000, maxTimeoutMs: 500 },
      { defaultTimeoutMs: 1_000, onInvalidTimeout: 'drop' },
      { defaultTimeoutMs: 1_000, header: 'bad header' },
    ]) {
      expect(() => resolveRequestTimeoutOptions(bad as never), JSON.stringify(bad)).toThrow(InvalidOptionError)
    }
    expect(() => resolveGovernedRequestOptions({ defaultTimeoutMs: 1_000, criticality: 'urgent' as never })).toThrow(InvalidOptionError)
    expect(() => resolveGovernedRequestOptions({ defaultTimeoutMs: 1_000, domain: 'has space' })).toThrow(InvalidOptionError)
    expect(() => resolveGovernedRequestOptions({ defaultTimeoutMs: 1_000, onClientGone: 'log' as never })).toThrow(InvalidOptionError)
  })
})

describe('governorHttpOutcome: the error-to-status table', () => {
  const deadline = new DeadlineExceededError({ phase: 'running', budgetMs: 200, waitedMs: 0, ranMs: 200 })
  const shed = new LoadShedError({ criticality: 'sheddable', reason: 'utilisation', retryAfterMs: 1_001, detail: 'busy' })
  const canceled = new QueryCanceledError({ phase: 'running', reason: 'client gone', waitedMs: 0, ranMs: 5 })

  it('maps each of our errors', () => {
    expect(governorHttpOutcome(deadline, { clientGone: false })).toMatchObject({ kind: 'respond', status: 504, body: { error: { code: 'DEADLINE_EXCEEDED' } } })
    expect(governorHttpOutcome(shed, { clientGone: false })).toMatchObject({
      kind: 'respond',
      status: 503,
      headers: { 'retry-after': '2' },
      body: { error: { code: 'LOAD_SHED', retryAfterMs: 1_001 } },
    })
    let invalid: unknown
    try {
      parseRequestTimeoutHeader('1e3')
    } catch (error) {
      invalid = error
    }
    expect(governorHttpOutcome(invalid, { clientGone: false })).toMatchObject({
      kind: 'respond',
      status: 400,
      body: { error: { code: 'INVALID_REQUEST_TIMEOUT', header: 'x-request-timeout', reason: 'malformed' } },
    })
    for (const error of [deadline, shed, canceled]) {
      expect(governorHttpOutcome(error, { clientGone: true })).toMatchObject({ kind: 'client_gone', status: 499 })
    }
  })

  it('leaves the rest to the framework', () => {
    expect(governorHttpOutcome(canceled, { clientGone: false })).toBeUndefined()
    expect(governorHttpOutcome(new Error('boom'), { clientGone: false })).toBeUndefined()
    expect(governorHttpOutcome(new InvalidOptionError('timeoutMs', 'bad'), { clientGone: false })).toBeUndefined()
    expect(governorHttpOutcome('a string', { clientGone: true })).toBeUndefined()
    expect(governorHttpOutcome(null, { clientGone: false })).toBeUndefined()
  })

  it('finds our error in a cause chain', () => {
    expect(findGovernorError(new Error('loading failed', { cause: new Error('inner', { cause: shed }) }))).toBe(shed)
    const loop: { cause?: unknown } = {}
    loop.cause = loop
    expect(findGovernorError(loop)).toBeUndefined()
  })

  it('rounds Retry-After up to whole seconds, at least 1', () => {
    expect(retryAfterSeconds(0)).toBe(1)
    expect(retryAfterSeconds(50)).toBe(1)
    expect(retryAfterSeconds(1_000)).toBe(1)
    expect(retryAfterSeconds(1_001)).toBe(2)
    expect(retryAfterSeconds(NaN)).toBe(1)
    expect(retryAfterSeconds(Infinity)).toBe(1)
  })
})
