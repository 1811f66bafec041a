import { describe, expect, it } from 'vitest'
import { DeadlineExceededError } from '../../src/errors/deadline-exceeded-error.js'
import { GovernorError } from '../../src/errors/governor-error.js'
import { InvalidOptionError } from '../../src/errors/invalid-option-error.js'
import { fullJitterDelayMs } from '../../src/retry/backoff.js'
import { RetryBudget, resolveRetryBudget } from '../../src/retry/retry-budget.js'
import { resolveRetryOptions } from '../../src/retry/retry-options.js'
import { planRetry, type RetryInput } from '../../src/retry/retry-plan.js'
import { classifyFailure, type RetryVerdict } from '../../src/retry/retry-policy.js'

function pgError(code: string, message = `error ${code}`): Error {
  return Object.assign(new Error(message), { code })
}

const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' })

describe('classifyFailure: what is always safe, what only on request, what never', () => {
  it('always: work that never reached the server', () => {
    expect(classifyFailure(refused, { stage: 'connect' })).toEqual({ safety: 'always', reason: 'connect_failed' })
    expect(classifyFailure(pgError('57P03', 'the database system is starting up'), { stage: 'connect' })).toEqual({ safety: 'always', reason: 'cannot_connect_now' })
    expect(classifyFailure(new Error('Connection terminated unexpectedly'), { stage: 'connect' })).toEqual({ safety: 'always', reason: 'connect_failed' })
    // The check at checkout is ours: even a stray 57014 on it leaves the caller's work unsent.
    expect(classifyFailure(pgError('57014', 'canceling statement due to user request'), { stage: 'checkout' })).toEqual({ safety: 'always', reason: 'dead_at_checkout' })
    expect(classifyFailure(new Error('Client has encountered a connection error and is not queryable'), { stage: 'checkout' })).toEqual({
      safety: 'always',
      reason: 'dead_at_checkout',
    })
  })

  it('only when the caller says so: a read outside a transaction after its connection broke, a whole transaction on 40001/40P01', () => {
    expect(classifyFailure(pgError('57P01'), { stage: 'statement', readOnly: true })).toEqual({ safety: 'opt_in', reason: 'admin_shutdown' })
    expect(classifyFailure(pgError('08006'), { stage: 'statement', readOnly: true, inTransaction: false })).toEqual({ safety: 'opt_in', reason: 'connection_lost' })
    expect(classifyFailure(pgError('40001'), { stage: 'transaction' })).toEqual({ safety: 'opt_in', reason: 'serialization_failure' })
    expect(classifyFailure(pgError('40P01'), { stage: 'transaction' })).toEqual({ safety: 'opt_in', reason: 'deadlock_detected' })
  })

  it('never: a write or COMMIT with an unknown outcome, our own 57014, LOAD_SHED, the deadline, 53300, bad credentials, other SQL errors', () => {
    const never = { safety: 'never', reason: undefined }
    // The connection broke after a write (or a COMMIT, or anything in a transaction) was sent: it may have run.
    expect(classifyFailure(pgError('08006'), { stage: 'statement' })).toEqual(never)
    expect(classifyFailure(pgError('57P01'), { stage: 'statement', readOnly: false })).toEqual(never)
    expect(classifyFailure(new Error('Connection terminated unexpectedly'), { stage: 'statement', readOnly: true, inTransaction: true })).toEqual(never)
    expect(classifyFailure(new GovernorError('QUERY_CANCELED', 'canceled by its deadline'), { stage: 'statement', readOnly: true })).toEqual(never)
    expect(classifyFailure(new GovernorError('LOAD_SHED', 'shed'), { stage: 'connect' })).toEqual(never)
    expect(classifyFailure(new DeadlineExceededError({ phase: 'waiting', budgetMs: 10, waitedMs: 10, ranMs: 0 }), { stage: 'connect' })).toEqual(never)
    expect(classifyFailure(pgError('53300', 'sorry, too many clients already'), { stage: 'connect' })).toEqual(never)
    expect(classifyFailure(pgError('28P01'), { stage: 'connect' })).toEqual(never)
    expect(classifyFailure(pgError('23505'), { stage: 'statement', readOnly: true })).toEqual(never)
    expect(classifyFailure(pgError('40001'), { stage: 'statement', readOnly: true })).toEqual(never)
  })
})

describe('RetryBudget: gRPC retry throttling', () => {
  it('allows retries while more than half the tokens are left; failures take one, successes give back tokenRatio', () => {
    const budget = new RetryBudget({ maxTokens: 10, tokenRatio: 0.1 })
    const allowed = Array.from({ length: 8 }, () => budget.failed())
    // 9, 8, 7, 6 left: allowed; 5 is half: not.
    expect(allowed).toEqual([true, true, true, true, false, false, false, false])
    expect(budget.tokens).toBe(2)
    for (let i = 0; i < 30; i++) budget.succeeded()
    expect(budget.tokens).toBeCloseTo(5)
    expect(budget.allowsRetry).toBe(false)
    budget.succeeded()
    expect(budget.allowsRetry).toBe(true)
    for (let i = 0; i < 1_000; i++) budget.succeeded()
    expect(budget.tokens).toBe(10)
  })

  it('bounds retries to maxTokens/2 + tokenRatio × successes under any mix of failures and successes', () => {
    const budget = new RetryBudget({ maxTokens: 10, tokenRatio: 0.1 })
    let retries = 0
    let successes = 0
    // A server that fails 9 in 10: every failure retries while allowed.
    for (let i = 0; i < 10_000; i++) {
      if (i % 10 === 0) {
        budget.succeeded()
        successes++
      } else if (budget.failed()) retries++
    }
    console.log(`[retry-budget] ${retries} retries for ${successes} successes and 9000 failures`)
    expect(retries).toBeLessThanOrEqual(5 + 0.1 * successes + 1)
    expect(retries).toBeGreaterThan(0)
  })

  it('validates its options', () => {
    expect(() => resolveRetryBudget({ tokenRatio: 0 })).toThrow(InvalidOptionError)
    expect(() => resolveRetryBudget({ maxTokens: -1 })).toThrow(/retry.budget.maxTokens/)
    expect(Object.isFrozen(resolveRetryBudget())).toBe(true)
  })
})

describe('fullJitterDelayMs', () => {
  it('draws from [0, min(maxMs, baseMs × 2^(retry-1))]', () => {
    const backoff = { baseMs: 25, maxMs: 1_000 }
    expect(fullJitterDelayMs(1, backoff, () => 0.999999)).toBeCloseTo(25)
    expect(fullJitterDelayMs(3, backoff, () => 0.5)).toBe(50)
    expect(fullJitterDelayMs(10, backoff, () => 1)).toBe(1_000)
    expect(fullJitterDelayMs(3, backoff, () => 0)).toBe(0)
  })
})

describe('planRetry', () => {
  const settings = resolveRetryOptions({ maxAttempts: 3, backoff: { baseMs: 100, maxMs: 1_000 } })
  const always: RetryVerdict = { safety: 'always', reason: 'connect_failed' }
  const base: RetryInput = { verdict: always, optedIn: false, attempts: 1, now: 1_000, deadline: 2_000, budgetAllows: true }
  const half = (): number => 0.5

  it('retries never-sent work with a jittered backoff', () => {
    expect(planRetry(base, settings, half)).toEqual({ retry: true, delayMs: 50 })
    expect(planRetry({ ...base, attempts: 2 }, settings, half)).toEqual({ retry: true, delayMs: 100 })
    expect(planRetry({ ...base, verdict: { safety: 'always', reason: 'dead_at_checkout' } }, settings, half)).toEqual({ retry: true, delayMs: 0 })
  })

  it('opt-in work only when the caller opted in; unsafe work never', () => {
    const optIn: RetryVerdict = { safety: 'opt_in', reason: 'serialization_failure' }
    expect(planRetry({ ...base, verdict: optIn }, settings, half)).toEqual({ retry: false, why: 'unsafe' })
    expect(planRetry({ ...base, verdict: optIn, optedIn: true }, settings, half)).toMatchObject({ retry: true })
    expect(planRetry({ ...base, verdict: { safety: 'never', reason: undefined }, optedIn: true }, settings, half)).toEqual({ retry: false, why: 'unsafe' })
  })

  it('stops at maxAttempts and when the budget is empty', () => {
    expect(planRetry({ ...base, attempts: 3 }, settings, half)).toEqual({ retry: false, why: 'attempts' })
    expect(planRetry({ ...base, budgetAllows: false }, settings, half)).toEqual({ retry: false, why: 'budget' })
  })

  it('never starts a retry at or after the deadline: a backoff that would reach it is not made', () => {
    // Fake clock: 40 ms left, a 50 ms backoff does not fit; 60 ms left, it does.
    expect(planRetry({ ...base, now: 1_960 }, settings, half)).toEqual({ retry: false, why: 'deadline' })
    expect(planRetry({ ...base, now: 1_940 }, settings, half)).toEqual({ retry: true, delayMs: 50 })
    expect(planRetry({ ...base, now: 2_000, verdict: { safety: 'always', reason: 'dead_at_checkout' } }, settings, half)).toEqual({ retry: false, why: 'deadline' })
    expect(planRetry({ ...base, deadline: Infinity, now: 1e12 }, settings, half)).toMatchObject({ retry: true })
  })

  it('resolveRetryOptions validates, freezes, and `false` means one attempt', () => {
    expect(resolveRetryOptions(false).maxAttempts).toBe(1)
    expect(() => resolveRetryOptions({ maxAttempts: 0 })).toThrow(/retry.maxAttempts/)
    expect(() => resolveRetryOptions({ backoff: { baseMs: 100, maxMs: 10 } })).toThrow(/retry.backoff.maxMs/)
    expect(() => resolveRetryOptions({ waitForRecovery: 'yes' as unknown as boolean })).toThrow(InvalidOptionError)
    expect(Object.isFrozen(resolveRetryOptions({}))).toBe(true)
  })
})

describe('the check at checkout: which sessions are due, and its option', () => {
  it('is due for a session handed back at least checkIdleAfterMs ago, never for one it has not seen (a new connection)', async () => {
    const { CheckoutCheck } = await import('../../src/retry/checkout-check.js')
    const check = new CheckoutCheck(1_000)
    const session = {} as never
    expect(check.due(session, 5_000)).toBe(false)
    check.released(session, 5_000)
    expect(check.due(session, 5_999)).toBe(false)
    expect(check.due(session, 6_000)).toBe(true)
  })

  it('defaults to 1000 ms, is off (Infinity) with retry: false, and refuses a negative or non-numeric value with a typed error', () => {
    expect(resolveRetryOptions({}).checkIdleAfterMs).toBe(1_000)
    expect(resolveRetryOptions(false).checkIdleAfterMs).toBe(Infinity)
    expect(resolveRetryOptions({ checkIdleAfterMs: Infinity }).checkIdleAfterMs).toBe(Infinity)
    expect(() => resolveRetryOptions({ checkIdleAfterMs: -1 })).toThrow(InvalidOptionError)
    expect(() => resolveRetryOptions({ checkIdleAfterMs: Number.NaN })).toThrow(/retry\.checkIdleAfterMs/)
    expect(() => resolveRetryOptions({ checkIdleAfterMs: '5' as never })).toThrow(InvalidOptionError)
  })
})

describe('per-context and per-policy retry: the nearer level wins, field by field', () => {
  it('context over policy over pool; false means one attempt and no reads at its level', async () => {
    const { retryScopeOf, nestedQueryRetry } = await import('../../src/retry/query-retry-options.js')
    const pool = resolveRetryOptions({ maxAttempts: 4 })
    expect(retryScopeOf(undefined, undefined, pool)).toEqual({ maxAttempts: 4, reads: false })
    expect(retryScopeOf(undefined, { reads: true }, pool)).toEqual({ maxAttempts: 4, reads: true })
    expect(retryScopeOf({ maxAttempts: 2 }, { reads: true }, pool)).toEqual({ maxAttempts: 2, reads: true })
    expect(retryScopeOf(false, { reads: true, maxAttempts: 5 }, pool)).toEqual({ maxAttempts: 1, reads: false })
    expect(retryScopeOf({ reads: true }, false, pool)).toEqual({ maxAttempts: 1, reads: true })
    expect(nestedQueryRetry({ reads: true }, { maxAttempts: 2 })).toEqual({ maxAttempts: 2, reads: true })
    expect(nestedQueryRetry({ reads: true }, undefined)).toEqual({ reads: true })
    expect(nestedQueryRetry(false, { reads: true })).toEqual({ maxAttempts: 1, reads: true })
    expect(nestedQueryRetry({ reads: true }, false)).toBe(false)
  })
})
