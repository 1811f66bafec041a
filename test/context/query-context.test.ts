import { describe, expect, it, vi } from 'vitest'
import { currentQueryContext, InvalidOptionError, PolicyRegistry, withQueryContext } from '../../src/index.js'

describe('withQueryContext', () => {
  it('is inherited however deep, across awaits and timers', async () => {
    await withQueryContext({ timeoutMs: 1_000, criticality: 'sheddable', domain: 'report' }, async () => {
      await new Promise((resolve) => setTimeout(resolve, 1))
      const inner = await Promise.resolve().then(() => currentQueryContext())
      expect(inner?.criticality).toBe('sheddable')
      expect(inner?.domain).toBe('report')
      expect(inner?.deadline).toBeLessThanOrEqual(performance.now() + 1_000)
    })
    expect(currentQueryContext()).toBeUndefined()
  })

  it('lets a nested context shorten the deadline but never extend it', () => {
    withQueryContext({ timeoutMs: 100 }, () => {
      const outer = currentQueryContext()?.deadline as number
      withQueryContext({ timeoutMs: 60_000 }, () => expect(currentQueryContext()?.deadline).toBe(outer))
      withQueryContext({ timeoutMs: 10 }, () => expect(currentQueryContext()?.deadline).toBeLessThan(outer))
      withQueryContext({ deadline: Date.now() + 60_000 }, () => expect(currentQueryContext()?.deadline).toBe(outer))
    })
  })

  it('combines signals: aborting an outer one aborts the inner context', () => {
    const outer = new AbortController()
    const inner = new AbortController()
    withQueryContext({ signal: outer.signal }, () =>
      withQueryContext({ signal: inner.signal, criticality: 'critical_plus' }, () => {
        const context = currentQueryContext()
        expect(context?.signals).toEqual([outer.signal, inner.signal])
        expect(context?.abortedSignal()).toBeUndefined()
        outer.abort('gone')
        expect(context?.abortedSignal()).toBe(outer.signal)
      }),
    )
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
