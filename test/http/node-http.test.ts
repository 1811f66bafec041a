import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { Counter, Registry } from 'prom-client'
import { describe, expect, it } from 'vitest'
import { governedHandler } from '../../src/http/node-http.js'
import { createMetricsHandler, type MetricsRegistry } from '../../src/http/metrics-endpoint.js'
import { InvalidOptionError } from '../../src/index.js'
import { describeAdapter, listen, type AdapterKit } from './adapter-suite.js'

function json(res: ServerResponse, body: unknown): void {
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body))
}

function app(kit: AdapterKit): (req: IncomingMessage, res: ServerResponse) => void {
  const routes: Record<string, (req: IncomingMessage, res: ServerResponse) => Promise<void>> = {
    '/sleep': governedHandler(kit.options.sleep, async (req, res) => {
      json(res, await kit.sleep(new URL(req.url ?? '/', 'http://x').searchParams.get('tag') ?? undefined))
    }),
    '/report': governedHandler(kit.options.report, async (_req, res) => json(res, await kit.selectOne())),
    '/critical': governedHandler(kit.options.critical, async (_req, res) => json(res, await kit.selectOne())),
    '/timeout/reject': governedHandler(kit.options.reject, async (_req, res, governed) => json(res, await kit.timeoutInfo(governed))),
    '/timeout/ignore': governedHandler(kit.options.ignore, async (_req, res, governed) => json(res, await kit.timeoutInfo(governed))),
    // onError given: the default would log the expected error to stderr.
    '/boom': governedHandler({ ...kit.options.critical, onError: (_error, _req, res) => res.writeHead(500).end('boom') }, async () => {
      throw new Error('boom')
    }),
    '/metrics': createMetricsHandler(kit.registry),
  }
  return (req, res) => {
    const route = routes[(req.url ?? '/').split('?')[0] as string]
    if (route) void route(req, res)
    else res.writeHead(404).end()
  }
}

describeAdapter('node_http', (kit) => listen(createServer(app(kit))))

describe('node_http: governedHandler on its own', () => {
  it('checks its options at setup', () => {
    expect(() => governedHandler({ defaultTimeoutMs: -1 }, () => {})).toThrow(InvalidOptionError)
    expect(() => governedHandler({ defaultTimeoutMs: 100, maxTimeoutMs: 50 }, () => {})).toThrow(InvalidOptionError)
  })

  it('answers an error that is not ours 500 with a JSON body by default, and never rejects', async () => {
    const errors: unknown[] = []
    const original = console.error
    console.error = (...args: unknown[]) => errors.push(args[0])
    try {
      const server = await listen(createServer(governedHandler({ defaultTimeoutMs: 100 }, () => Promise.reject(new Error('handler failed')))))
      try {
        const response = await fetch(server.url)
        expect(response.status).toBe(500)
        expect(await response.json()).toEqual({ error: { code: 'INTERNAL_ERROR', message: 'internal server error' } })
        expect(errors).toHaveLength(1)
        expect((errors[0] as Error).message).toBe('handler failed')
      } finally {
        await server.close()
      }
    } finally {
      console.error = original
    }
  })
})

describe('createMetricsHandler', () => {
  it('serves GET and HEAD on its path only, 405 for other methods, 500 when the registry fails', async () => {
    let fail = false
    const registry = {
      contentType: 'text/plain; version=0.0.4; charset=utf-8',
      metrics: async () => {
        if (fail) throw new Error('collector exploded')
        return 'up 1\n'
      },
    }
    const failures: unknown[] = []
    const server = await listen(createServer(createMetricsHandler(registry, { onError: (error) => failures.push(error) })))
    try {
      const get = await fetch(`${server.url}/metrics?x=1`)
      expect(get.status).toBe(200)
      expect(get.headers.get('content-type')).toBe(registry.contentType)
      expect(await get.text()).toBe('up 1\n')
      const head = await fetch(`${server.url}/metrics`, { method: 'HEAD' })
      expect(head.status).toBe(200)
      expect(head.headers.get('content-length')).toBe('5')
      expect(await head.text()).toBe('')
      const post = await fetch(`${server.url}/metrics`, { method: 'POST' })
      expect(post.status).toBe(405)
      expect(post.headers.get('allow')).toBe('GET, HEAD')
      await post.arrayBuffer()
      const other = await fetch(`${server.url}/other`)
      expect(other.status).toBe(404)
      await other.arrayBuffer()
      fail = true
      const failed = await fetch(`${server.url}/metrics`)
      expect(failed.status).toBe(500)
      expect(await failed.text()).toBe('metrics collection failed\n')
      expect((failures[0] as Error).message).toBe('collector exploded')
    } finally {
      await server.close()
    }
  })

  it("serves a prom-client Registry as it is", async () => {
    const registry = new Registry()
    new Counter({ name: 'http_suite_scrapes_total', help: 'scrapes', registers: [registry] }).inc(3)
    const structural: MetricsRegistry = registry
    const server = await listen(createServer(createMetricsHandler(structural)))
    try {
      const response = await fetch(`${server.url}/metrics`)
      expect(response.status).toBe(200)
      expect(response.headers.get('content-type')).toBe(registry.contentType)
      expect(await response.text()).toContain('http_suite_scrapes_total 3')
    } finally {
      await server.close()
    }
  })

  it('refuses something that is not a registry', () => {
    expect(() => createMetricsHandler({} as never)).toThrow(TypeError)
  })
})
