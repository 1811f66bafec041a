import { createServer } from 'node:http'
import express, { type NextFunction, type Request, type Response } from 'express'
import { describe, expect, it } from 'vitest'
import { expressGovernor, expressGovernorErrorHandler } from '../../src/http/express.js'
import { governedRequestOf, type GovernedRequest } from '../../src/http/governed-request.js'
import { createMetricsHandler } from '../../src/http/metrics-endpoint.js'
import { InvalidOptionError } from '../../src/index.js'
import { describeAdapter, listen, type AdapterKit } from './adapter-suite.js'

function app(kit: AdapterKit): express.Express {
  const app = express()
  app.get('/metrics', createMetricsHandler(kit.registry))
  app.get('/sleep', expressGovernor(kit.options.sleep), async (req, res) => {
    res.json(await kit.sleep(typeof req.query['tag'] === 'string' ? req.query['tag'] : undefined))
  })
  app.get('/report', expressGovernor(kit.options.report), async (_req, res) => {
    res.json(await kit.selectOne())
  })
  app.get('/critical', expressGovernor(kit.options.critical), async (_req, res) => {
    res.json(await kit.selectOne())
  })
  app.get('/timeout/reject', expressGovernor(kit.options.reject), async (_req, res) => {
    res.json(await kit.timeoutInfo(res.locals['governor'] as GovernedRequest))
  })
  app.get('/timeout/ignore', expressGovernor(kit.options.ignore), async (req, res) => {
    res.json(await kit.timeoutInfo(governedRequestOf(req)))
  })
  app.get('/boom', expressGovernor(kit.options.critical), async () => {
    throw new Error('boom')
  })
  app.use(expressGovernorErrorHandler())
  // Express's own final handler would log the expected 'boom' to stderr; answer it quietly.
  app.use((_error: unknown, _req: Request, res: Response, _next: NextFunction) => {
    res.status(500).send('internal')
  })
  return app
}

describeAdapter('express', (kit) => listen(createServer(app(kit))))

describe('express: setup', () => {
  it('checks its options when the middleware is made', () => {
    expect(() => expressGovernor({ defaultTimeoutMs: 0 })).toThrow(InvalidOptionError)
    expect(() => expressGovernor({ defaultTimeoutMs: 100, onInvalidTimeout: 'maybe' as never })).toThrow(InvalidOptionError)
  })
})
