import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { CancelSettler } from '../../src/session/cancel-settler.js'

function deferred(): { readonly promise: Promise<void>; readonly resolve: () => void; readonly reject: (error: Error) => void } {
  let resolve!: () => void
  let reject!: (error: Error) => void
  const promise = new Promise<void>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

describe('CancelSettler (fake clock)', () => {
  beforeEach(() => {
    vi.useFakeTimers()
  })
  afterEach(() => {
    vi.useRealTimers()
  })

  it('is ready with nothing to wait for until a step is queued', () => {
    const settler = new CancelSettler(1_000)
    expect(settler.state.kind).toBe('ready')
    expect(settler.settled()).toBeUndefined()
    expect(settler.discardReason).toBeUndefined()
  })

  it('settles after its steps, in order, and is ready again', async () => {
    const settler = new CancelSettler(1_000)
    const first = deferred()
    const second = deferred()
    const order: string[] = []
    void settler.after(() => first.promise.then(() => order.push('first')))
    void settler.after(() => second.promise.then(() => order.push('second')))
    expect(settler.state.kind).toBe('settling')
    second.resolve()
    await vi.advanceTimersByTimeAsync(0)
    expect(order).toEqual([]) // the second step waits for the first
    first.resolve()
    await settler.settled()
    expect(order).toEqual(['first', 'second'])
    expect(settler.state).toEqual({ kind: 'ready' })
  })

  it('ends discarded when discarded while settling, and only after the steps', async () => {
    const settler = new CancelSettler(1_000)
    const step = deferred()
    const settled = settler.after(() => step.promise)
    expect(settler.discard('cancel failed')).toBe(true)
    expect(settler.discard('a second reason')).toBe(false)
    expect(settler.state).toMatchObject({ kind: 'settling', discardReason: 'cancel failed' })
    step.resolve()
    await settled
    expect(settler.state).toEqual({ kind: 'discarded', reason: 'cancel failed' })
    expect(settler.settled()).toBeUndefined()
  })

  it('discards the session when a step fails', async () => {
    const settler = new CancelSettler(1_000)
    const step = deferred()
    const settled = settler.after(() => step.promise)
    step.reject(new Error('boom'))
    await settled
    expect(settler.state).toEqual({ kind: 'discarded', reason: 'cleanup failed: Error: boom' })
  })

  it('gives up on a step that overruns its bound and discards the session', async () => {
    const settler = new CancelSettler(1_000)
    const settled = settler.after(() => new Promise(() => {}))
    await vi.advanceTimersByTimeAsync(999)
    expect(settler.state.kind).toBe('settling')
    await vi.advanceTimersByTimeAsync(1)
    await settled
    expect(settler.state).toEqual({ kind: 'discarded', reason: 'did not settle within 1000 ms' })
  })

  it('stays discarded: a discarded session queues steps but never becomes ready again', async () => {
    const settler = new CancelSettler(1_000)
    settler.discard('session killed')
    await settler.after(() => Promise.resolve())
    expect(settler.state).toEqual({ kind: 'discarded', reason: 'session killed' })
  })
})
