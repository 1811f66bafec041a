import type { Server } from 'node:http'
import { serve } from '@hono/node-server'
import { Hono } from 'hono'
import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { honoGovernor, honoGovernorErrorHandler, type HonoGovernorEnv } from '../../src/http/hono.js'
import { metricsResponse } from '../../src/http/metrics-endpoint.js'
import { InvalidOptionError, type CancelEvent } from '../../src/index.js'
import type { ClientGoneEvent } from '../../src/http/governed-request.js'
import { activeWithTag, backend, waitFor } from '../support/governed.js'
import { closeServer, describeAdapter, urlOf, type AdapterKit, type RunningApp } from './adapter-suite.js'

function app(kit: AdapterKit): Hono<HonoGovernorEnv> {
  const app = new Hono<HonoGovernorEnv>()
  app.get('/metrics', () => metricsResponse(kit.registry))
  app.get('/sleep', honoGovernor(kit.options.sleep), async (c) => c.json(await kit.sleep(c.req.query('tag'))))
  app.get('/report', honoGovernor(kit.options.report), async (c) => c.json(await kit.selectOne()))
  app.get('/critical', honoGovernor(kit.options.critical), async (c) => c.json(await kit.selectOne()))
  app.get('/timeout/reject', honoGovernor(kit.options.reject), async (c) => c.json(await kit.timeoutInfo(c.get('governor'))))
  app.get('/timeout/ignore', honoGovernor(kit.options.ignore), async (c) => c.json(await kit.timeoutInfo(c.var.governor)))
  app.get('/boom', honoGovernor(kit.options.critical), async () => {
    throw new Error('boom')
  })
  // Hono's default onError would log the expected 'boom' to stderr.
  app.onError(honoGovernorErrorHandler((_error, c) => c.text('internal', 500)))
  return app
}

function start(honoApp: Hono<HonoGovernorEnv>): Promise<RunningApp> {
  return new Promise((resolve) => {
    const server = serve({ fetch: honoApp.fetch, port: 0, hostname: '127.0.0.1' }, () => {
      resolve({ url: urlOf(server as Server), close: () => closeServer(server as Server) })
    })
  })
}

const harness = describeAdapter('hono', (kit) => start(app(kit)))

describe('hono: middleware specifics', () => {
  it('checks its options when the middleware is made', () => {
    expect(() => honoGovernor({ defaultTimeoutMs: 100, header: 'not a header' })).toThrow(InvalidOptionError)
  })

  it("answers our errors without an onError of ours (after Hono's default handler)", async () => {
    const plain = new Hono<HonoGovernorEnv>()
    plain.get('/slow', honoGovernor({ defaultTimeoutMs: 150 }), async (c) => c.json(await sql`select pg_sleep(5)`.execute(harness.setup.db)))
    // Hono's default onError logs the error; keep the run quiet.
    const original = console.error
    const logged: unknown[] = []
    console.error = (...args: unknown[]) => logged.push(args[0])
    try {
      const running = await start(plain)
      try {
        const response = await fetch(`${running.url}/slow`)
        expect(response.status).toBe(504)
        expect(((await response.json()) as any).error.code).toBe('DEADLINE_EXCEEDED')
      } finally {
        await running.close()
      }
    } finally {
      console.error = original
    }
    expect(logged).toHaveLength(1)
  })

  it('without node bindings (Bun, Deno, workers) the request signal cancels the backend', async () => {
    const gone: ClientGoneEvent[] = []
    const cancels: CancelEvent[] = []
    const stopListening = harness.setup.dialect.events.on('cancel', (event) => {
      cancels.push(event)
    })
    try {
      const web = new Hono<HonoGovernorEnv>()
      web.get('/sleep', honoGovernor({ defaultTimeoutMs: 10_000, onClientGone: (event) => gone.push(event) }), async (c) => c.json(await harness.kit.sleep(c.req.query('tag'))))
      web.onError(honoGovernorErrorHandler())
      const tag = 'hono_web_signal'
      const controller = new AbortController()
      // app.fetch with a web Request and no env: the path Bun, Deno and workers take.
      const pending = Promise.resolve(web.fetch(new Request(`http://web.test/sleep?tag=${tag}`, { signal: controller.signal })))
      const [pid] = await waitFor('the backend', async () => {
        const found = await activeWithTag(harness.database, tag)
        return found.length > 0 && found
      })
      controller.abort()
      const response = await pending.catch((error: unknown) => error)
      // Nobody reads it: an empty 499.
      expect(response).toBeInstanceOf(Response)
      expect((response as Response).status).toBe(499)
      expect(await (response as Response).text()).toBe('')
      await waitFor('the backend to stop', async () => (await backend(harness.database, pid as number))?.state !== 'active', 2_000)
      await waitFor('the cancel event', async () => cancels.some((event) => event.pid === pid && event.reason === 'abort'))
      expect(gone).toEqual([expect.objectContaining({ status: 499, method: 'GET', url: `/sleep?tag=${tag}`, timeoutMs: 10_000 })])
    } finally {
      stopListening()
    }
  })

  it('an invalid header is answered 400 on the web path too', async () => {
    const web = new Hono<HonoGovernorEnv>()
    web.get('/x', honoGovernor({ defaultTimeoutMs: 100 }), (c) => c.text('never'))
    const response = await web.fetch(new Request('http://web.test/x', { headers: { 'x-request-timeout': '1e3' } }))
    expect(response.status).toBe(400)
    expect(await response.json()).toMatchObject({ error: { code: 'INVALID_REQUEST_TIMEOUT', reason: 'malformed' } })
  })
})
