import { describe, expect, it } from 'vitest'
import { now } from '../../src/context/monotonic-clock.js'
import { InvalidOptionError } from '../../src/errors/invalid-option-error.js'
import type { Canceller, CancelOutcome } from '../../src/session/canceller.js'
import type { CarriedStatement } from '../../src/session/deadline-carrier.js'
import { sessionStrategyFor } from '../../src/session/session-strategy.js'
import { StatementTimeoutCache } from '../../src/session/statement-timeout-cache.js'

/** A carried statement's simple-query text. */
function textOf(carried: CarriedStatement | undefined): string | undefined {
  return carried?.kind === 'simple' ? carried.text : undefined
}

/** Records which way each cancel went. */
function recordingCanceller(): { canceller: Canceller; calls: string[] } {
  const calls: string[] = []
  const outcome = (method: CancelOutcome['method']): Promise<CancelOutcome> => Promise.resolve({ method, confirmed: method !== 'protocol', durationMs: 0 })
  const canceller = {
    cancel: (pid: number) => (calls.push(`backend ${pid}`), outcome('backend')),
    terminate: (pid: number) => (calls.push(`kill ${pid}`), outcome('kill')),
    protocolCancel: (pid: number) => (calls.push(`protocol ${pid}`), outcome('protocol')),
  } as unknown as Canceller
  return { canceller, calls }
}

describe('session strategies', () => {
  it('direct (the default): session SET outside a transaction, SET LOCAL inside; pg_cancel_backend and pg_terminate_backend', async () => {
    const strategy = sessionStrategyFor(undefined)
    expect(strategy.pooler).toBe('none')
    expect(strategy.usesControlConnection).toBe(true)
    expect(strategy.timeoutChange(new StatementTimeoutCache(), 500, 'I')).toEqual({ value: 500, local: false })
    expect(strategy.timeoutChange(new StatementTimeoutCache(), 500, 'T')).toEqual({ value: 500, local: true })
    // The cached session SET carries the deadline: nothing rides along with the statement, and a caller's own SET is read back.
    expect(strategy.carry('select 1', [], now() + 500, 'I')).toBeUndefined()
    expect(strategy.carriesDeadlines).toBe(false)
    expect(strategy.learnsCallerTimeout('I')).toBe(true)
    const { canceller, calls } = recordingCanceller()
    await strategy.cancel(canceller, 7, 1)
    await strategy.terminate(canceller, 7, 1)
    expect(calls).toEqual(['backend 7', 'kill 7'])
  })

  it('PgBouncer transaction pooling: nothing outside a transaction (a session SET would leak), SET LOCAL inside; protocol cancels only', async () => {
    const strategy = sessionStrategyFor('pgbouncer-transaction')
    expect(strategy.usesControlConnection).toBe(false)
    const cache = new StatementTimeoutCache()
    expect(strategy.timeoutChange(cache, 500, 'I')).toBeUndefined()
    expect(strategy.timeoutChange(cache, 'default', 'I')).toBeUndefined()
    expect(strategy.timeoutChange(cache, 500, 'T')).toEqual({ value: 500, local: true })
    expect(strategy.timeoutChange(cache, 500, 'E')).toBeUndefined()
    // Outside a transaction the deadline rides in the statement's own simple query where it can (deadline-carrier.test.ts).
    expect(textOf(strategy.carry('select 1', [], now() + 500, 'I'))).toMatch(/^set local statement_timeout = \d+; set local client_connection_check_interval = 10; select 1$/)
    expect(strategy.carry('select $1::int', [1], now() + 500, 'I')?.kind).toBe('extended')
    expect(strategy.carry('select 1', [], now() + 500, 'T')).toBeUndefined()
    // A server that refuses the close check: this pool's strategy carries none from then on, another pool's still does.
    strategy.closeCheckRefused()
    expect(textOf(strategy.carry('select 1', [], now() + 500, 'I'))).toMatch(/^set local statement_timeout = \d+; select 1$/)
    expect(textOf(sessionStrategyFor('pgbouncer-transaction').carry('select 1', [], now() + 500, 'I'))).toMatch(/client_connection_check_interval/)
    expect(strategy.carriesDeadlines).toBe(true)
    // A caller's own SET outside a transaction is not read back: the read-back could run on another server connection.
    expect(strategy.learnsCallerTimeout('I')).toBe(false)
    expect(strategy.learnsCallerTimeout('T')).toBe(true)
    const { canceller, calls } = recordingCanceller()
    await strategy.cancel(canceller, 7, 1)
    await strategy.terminate(canceller, 7, 1)
    expect(calls).toEqual(['protocol 7', 'protocol 7'])
    // PgBouncer drops a cancel for a client still queued for a server connection: repeats come often, without backing off.
    expect(strategy.cancelAgainAfter).toEqual({ firstMs: 20, maxMs: 20 })
    expect(sessionStrategyFor('none').cancelAgainAfter).toEqual({ firstMs: 50, maxMs: 1_000 })
  })

  it('PgBouncer session pooling: the session SET as on a direct connection; protocol cancels only', async () => {
    const strategy = sessionStrategyFor('pgbouncer-session')
    expect(strategy.timeoutChange(new StatementTimeoutCache(), 500, 'I')).toEqual({ value: 500, local: false })
    expect(strategy.carry('select 1', [], now() + 500, 'I')).toBeUndefined()
    expect(strategy.learnsCallerTimeout('I')).toBe(true)
    const { canceller, calls } = recordingCanceller()
    await strategy.cancel(canceller, 7, 1)
    expect(calls).toEqual(['protocol 7'])
  })

  it("transaction pooling with deadlineOnServerClock: the server works the time left out; only in that mode, and only as a boolean", () => {
    const strategy = sessionStrategyFor({ mode: 'pgbouncer-transaction', deadlineOnServerClock: true })
    expect(strategy.pooler).toBe('pgbouncer-transaction')
    expect(textOf(strategy.carry('select 1', [], now() + 500, 'I'))).toMatch(/^select set_config\('statement_timeout', .*, set_config\('client_connection_check_interval', '10', true\) from .*clock_timestamp\(\).*; select 1$/)
    expect(textOf(sessionStrategyFor({ mode: 'pgbouncer-transaction' }).carry('select 1', [], now() + 500, 'I'))).toMatch(/^set local statement_timeout = \d+; set local/)
    expect(sessionStrategyFor({ mode: 'pgbouncer-session' }).pooler).toBe('pgbouncer-session')
    expect(() => sessionStrategyFor({ mode: 'pgbouncer-session', deadlineOnServerClock: true })).toThrow(/pooler.deadlineOnServerClock.*'pgbouncer-transaction' only/)
    expect(() => sessionStrategyFor({ mode: 'pgbouncer-transaction', deadlineOnServerClock: 'yes' })).toThrow(/pooler.deadlineOnServerClock.*must be a boolean/)
    expect(() => sessionStrategyFor({ mode: 'pgbouncer' })).toThrow(/pooler.mode.*must be one of/)
  })

  it('refuses an unknown mode, and startup parameters PgBouncer refuses, saying what to change', () => {
    expect(() => sessionStrategyFor('pgbouncer')).toThrow(InvalidOptionError)
    expect(() => sessionStrategyFor('pgbouncer-transaction', { statement_timeout: 1000, options: undefined })).toThrow(
      /refuses the startup parameter statement_timeout \(08P01 unsupported startup parameter\): remove it .*ignore_startup_parameters/,
    )
    expect(() => sessionStrategyFor('pgbouncer-session', { lock_timeout: 5, options: '-c search_path=x' })).toThrow(/lock_timeout, options/)
    // A direct connection takes them.
    expect(sessionStrategyFor('none', { statement_timeout: 1000 }).pooler).toBe('none')
    expect(sessionStrategyFor('pgbouncer-transaction', { statement_timeout: undefined, options: undefined }).pooler).toBe('pgbouncer-transaction')
  })
})
