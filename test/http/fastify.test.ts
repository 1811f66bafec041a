import { Writable } from 'node:stream'
import Fastify, { type FastifyInstance } from 'fastify'
import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { fastifyGovernor, replyWithGovernorError } from '../../src/http/fastify.js'
import { renderMetrics } from '../../src/http/metrics-endpoint.js'
import { InvalidOptionError } from '../../src/index.js'
import { activeWithTag, backend, waitFor } from '../support/governed.js'
import { describeAdapter, urlOf, closeServer, type AdapterKit, type RunningApp } from './adapter-suite.js'

/** The plugin's options are the critical route's; the other routes override them in `config.governor`. */
async function app(kit: AdapterKit, logger: false | { stream: Writable } = false): Promise<FastifyInstance> {
  const app = Fastify({ logger })
  await app.register(fastifyGovernor, kit.options.critical)
  app.get('/metrics', { config: { governor: false } }, async (_request, reply) => {
    const { status, headers, body } = await renderMetrics(kit.registry)
    return reply.code(status).headers(headers).send(body)
  })
  app.get<{ Querystring: { tag?: string } }>('/sleep', { config: { governor: kit.options.sleep } }, (request) => kit.sleep(request.query.tag))
  app.get('/report', { config: { governor: kit.options.report } }, () => kit.selectOne())
  app.get('/critical', () => kit.selectOne())
  app.get('/timeout/reject', { config: { governor: kit.options.reject } }, (request) => kit.timeoutInfo(request.governor))
  app.get('/timeout/ignore', { config: { governor: kit.options.ignore } }, (request) => kit.timeoutInfo(request.governor))
  app.get('/boom', async () => {
    throw new Error('boom')
  })
  return app
}

async function start(instance: FastifyInstance): Promise<RunningApp> {
  await instance.listen({ port: 0, host: '127.0.0.1' })
  return { url: urlOf(instance.server), close: async () => {
    await closeServer(instance.server)
    await instance.close()
  } }
}

const harness = describeAdapter('fastify', async (kit) => start(await app(kit)))

describe('fastify: plugin specifics', () => {
  it('fails the route, not a request, on a bad override', async () => {
    const instance = Fastify()
    await instance.register(fastifyGovernor, { defaultTimeoutMs: 1_000 })
    expect(() => instance.get('/bad', { config: { governor: { maxTimeoutMs: 10 } } }, () => 'never')).toThrow(InvalidOptionError)
    await instance.close()
  })

  it('fails the boot on bad plugin options', async () => {
    const instance = Fastify()
    instance.register(fastifyGovernor, { defaultTimeoutMs: -5 })
    await expect(instance.ready()).rejects.toThrow(InvalidOptionError)
  })

  it('logs a disconnect as 499 through request.log by default', async () => {
    const lines: string[] = []
    const stream = new Writable({
      write(chunk, _encoding, callback) {
        lines.push(String(chunk))
        callback()
      },
    })
    const instance = Fastify({ logger: { level: 'info', stream } })
    await instance.register(fastifyGovernor, { defaultTimeoutMs: 10_000 })
    instance.get<{ Querystring: { tag: string } }>('/sleep', (request) => harness.kit.sleep(request.query.tag))
    const running = await start(instance)
    try {
      const tag = 'fastify_default_log'
      const controller = new AbortController()
      const pending = fetch(`${running.url}/sleep?tag=${tag}`, { signal: controller.signal })
      pending.catch(() => {})
      const [pid] = await waitFor('the backend', async () => {
        const found = await activeWithTag(harness.database, tag)
        return found.length > 0 && found
      })
      controller.abort()
      await waitFor('the backend to stop', async () => (await backend(harness.database, pid as number))?.state !== 'active', 2_000)
      const logged = await waitFor('the 499 line', async () => lines.map((line) => JSON.parse(line)).find((entry) => entry.msg === 'client closed request'))
      expect(logged).toMatchObject({ level: 30, res: { statusCode: 499 }, clientGone: { status: 499, method: 'GET', timeoutMs: 10_000 } })
    } finally {
      await running.close()
    }
  })

  it('leaves the error handler to the app with errorHandler: false', async () => {
    const instance = Fastify()
    await instance.register(fastifyGovernor, { defaultTimeoutMs: 150, errorHandler: false })
    const seen: string[] = []
    instance.setErrorHandler((error, request, reply) => {
      seen.push((error as { code?: string }).code ?? 'none')
      if (replyWithGovernorError(error, request, reply)) return
      return reply.code(500).send({ mine: true })
    })
    instance.get('/slow', async () => sql`select pg_sleep(5)`.execute(harness.setup.db))
    instance.get('/boom', async () => {
      throw new Error('boom')
    })
    const running = await start(instance)
    try {
      const slow = await fetch(`${running.url}/slow`)
      expect(slow.status).toBe(504)
      expect(((await slow.json()) as any).error.code).toBe('DEADLINE_EXCEEDED')
      const boom = await fetch(`${running.url}/boom`)
      expect(boom.status).toBe(500)
      expect(await boom.json()).toEqual({ mine: true })
      expect(seen).toEqual(['DEADLINE_EXCEEDED', 'none'])
    } finally {
      await running.close()
    }
  })
})
