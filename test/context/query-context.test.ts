import { describe, expect, it, vi } from 'vitest'
import { currentQueryContext, InvalidOptionError, PolicyRegistry, withQueryContext } from '../../src/index.js'

describe('withQueryContext', () => {
  it('is inherited however deep, across awaits and timers', async () => {
    const before = performance.now()
    const [inTimer, inPromise, after] = await withQueryContext({ timeoutMs: 1_000, criticality: 'sheddable', domain: 'report' }, async () => {
      const inTimer = await new Promise((resolve) => setTimeout(() => resolve(currentQueryContext()), 1))
      const inPromise = await Promise.resolve().then(() => currentQueryContext())
      return [inTimer, inPromise, performance.now()] as const
    })
    expect(inTimer).toBe(inPromise)
    expect(inPromise?.criticality).toBe('sheddable')
    expect(inPromise?.domain).toBe('report')
    // Set once, when the context was made: 1 s after a moment between `before` and `after`.
    expect(inPromise?.deadline).toBeGreaterThanOrEqual(before + 1_000)
    expect(inPromise?.deadline).toBeLessThanOrEqual(after + 1_000)
    expect(currentQueryContext()).toBeUndefined()
  })

  it('lets a nested context shorten the deadline but never extend it', () => {
    const deadline = () => currentQueryContext()?.deadline
    const [outer, longer, shorter, later] = withQueryContext({ timeoutMs: 100 }, () => [
      deadline(),
      withQueryContext({ timeoutMs: 60_000 }, deadline),
      withQueryContext({ timeoutMs: 10 }, deadline),
      withQueryContext({ deadline: Date.now() + 60_000 }, deadline),
    ])
    expect(outer).toBeLessThan(Infinity)
    expect(longer).toBe(outer)
    expect(shorter).toBeLessThan(outer as number)
    expect(later).toBe(outer)
  })

  it('combines signals: aborting an outer one aborts the inner context', () => {
    const outer = new AbortController()
    const inner = new AbortController()
    const [signals, abortedBefore, abortedAfter] = withQueryContext({ signal: outer.signal }, () =>
      withQueryContext({ signal: inner.signal, criticality: 'critical_plus' }, () => {
        const context = currentQueryContext()
        const abortedBefore = context?.abortedSignal()
        outer.abort('gone')
        return [context?.signals, abortedBefore, context?.abortedSignal()] as const
      }),
    )
    expect(signals).toEqual([outer.signal, inner.signal])
    expect(abortedBefore).toBeUndefined()
    expect(abortedAfter).toBe(outer.signal)
  })

  it('keeps one listener per signal per context and removes it when the scope ends', async () => {
    const controller = new AbortController()
    const add = vi.spyOn(controller.signal, 'addEventListener')
    const remove = vi.spyOn(controller.signal, 'removeEventListener')
    let watched = 0
    await withQueryContext({ signal: controller.signal }, async () => {
      const context = currentQueryContext()
      for (let i = 0; i < 50; i++) {
        const watcher = { onAbort: () => watched++ }
        context?.watch(watcher)
        context?.unwatch(watcher)
      }
    })
    expect(add).toHaveBeenCalledTimes(1)
    expect(remove).toHaveBeenCalledTimes(1)
    controller.abort()
    expect(watched).toBe(0)
  })

  it.each([
    [{ timeoutMs: -1 }, 'timeoutMs'],
    [{ timeoutMs: Number.NaN }, 'timeoutMs'],
    [{ timeoutMs: Infinity }, 'timeoutMs'],
    [{ timeoutMs: '100' }, 'timeoutMs'],
    [{ timeoutMs: 2 ** 31 }, 'timeoutMs'],
    [{ deadline: new Date('nope') }, 'deadline'],
    [{ deadline: '2026-01-01' }, 'deadline'],
    [{ criticality: 'urgent' }, 'criticality'],
    [{ domain: '' }, 'domain'],
    [{ domain: 'a b' }, 'domain'],
    [{ domain: 'x'.repeat(65) }, 'domain'],
    [{ signal: {} }, 'signal'],
  ])('rejects %j with a typed error before running anything', (options, option) => {
    const fn = vi.fn()
    let error: unknown
    try {
      withQueryContext(options as never, fn)
    } catch (caught) {
      error = caught
    }
    expect(error).toBeInstanceOf(InvalidOptionError)
    expect((error as InvalidOptionError).code).toBe('INVALID_OPTION')
    expect((error as InvalidOptionError).option).toBe(option)
    expect(fn).not.toHaveBeenCalled()
  })
})

describe('PolicyRegistry', () => {
  it('resolves a domain to its policy and anything else to the defaults', () => {
    const registry = new PolicyRegistry({ defaultTimeoutMs: 5_000, policies: { payment: { timeoutMs: 3_000, criticality: 'critical' } } })
    expect(registry.resolve('payment')).toEqual({ timeoutMs: 3_000, criticality: 'critical' })
    expect(registry.resolve('unknown')).toEqual({ timeoutMs: 5_000, criticality: 'critical' })
    expect(registry.resolve(undefined)).toEqual({ timeoutMs: 5_000, criticality: 'critical' })
    registry.set('report', { criticality: 'sheddable' })
    expect(registry.resolve('report')).toEqual({ timeoutMs: 5_000, criticality: 'sheddable' })
  })

  it('defaults to 30 s, and null means no deadline', () => {
    expect(new PolicyRegistry().defaults).toEqual({ timeoutMs: 30_000, criticality: 'critical' })
    expect(new PolicyRegistry({ defaultTimeoutMs: null }).defaults.timeoutMs).toBeUndefined()
  })

  it('refuses a bad policy and changes nothing', () => {
    const registry = new PolicyRegistry({ policies: { payment: { timeoutMs: 3_000 } } })
    expect(() => registry.set('payment', { timeoutMs: -5 })).toThrow(InvalidOptionError)
    expect(registry.resolve('payment').timeoutMs).toBe(3_000)
    expect(() => new PolicyRegistry({ policies: { ok: { timeoutMs: 1 }, bad: { criticality: 'high' as never } } })).toThrow(/policies\.bad\.criticality/)
  })
})
