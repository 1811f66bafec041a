/**
 * One counted run of bench/instructions.ts, run under valgrind's callgrind
 * with instrumentation off: warms up, prints `ready` and waits for a line on
 * stdin (the parent turns instrumentation on meanwhile), runs exactly `count`
 * `select 1` queries at the given concurrency against the real server, prints
 * `done` and waits for another line (instrumentation goes off), then exits.
 * Only the counted queries are counted: start-up, module loading, warm-up and
 * shutdown are not.
 *
 *   node --import tsx bench/support/instructions-worker.ts <url> <kind> <warmup> <count> <concurrency>
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { createInterface } from 'node:readline'
import { join } from 'node:path'
import pino from 'pino'
import { Registry } from 'prom-client'
import { governedDb, plainDb, select1, select1WithDeadline, type PlainDb } from './dialects.js'
import { loadGovernor } from './lib.js'
import { loadGovernorWithPrometheus } from './telemetry-lib.js'

export type InstructionKind = 'plain' | 'plain-als' | 'governed' | 'governed-cold' | 'deadline' | 'telemetry-on'

const POOL_MAX = 16
const DEADLINE_MS = 5000

async function setup(url: string, kind: InstructionKind): Promise<{ db: PlainDb; op: () => Promise<unknown>; cleanup: () => void }> {
  if (kind === 'plain' || kind === 'plain-als') {
    const db = plainDb(url, POOL_MAX)
    const base = select1(db.db)
    const storage = new AsyncLocalStorage<object>()
    return { db, op: kind === 'plain' ? base : () => storage.run({}, base), cleanup: () => {} }
  }
  if (kind === 'telemetry-on') {
    const { governor, prometheus } = await loadGovernorWithPrometheus()
    const dir = mkdtempSync(join(tmpdir(), 'pg-governor-bench-instructions-'))
    const logger = pino({ level: 'info' }, pino.destination({ dest: join(dir, 'on.log'), sync: false }))
    const db = governedDb(governor, url, POOL_MAX, { logger, logging: { slowQueryMs: 1000 } })
    prometheus.registerPrometheusMetrics(db.dialect, { registry: new Registry(), poolName: 'bench' })
    return { db, op: select1(db.db), cleanup: () => rmSync(dir, { recursive: true, force: true }) }
  }
  const { governor } = await loadGovernor()
  const db = governedDb(governor, url, POOL_MAX, kind === 'governed-cold' ? { warmConnections: false } : {})
  return { db, op: kind === 'deadline' ? select1WithDeadline(governor, db.db, DEADLINE_MS) : select1(db.db), cleanup: () => {} }
}

async function runExactly(op: () => Promise<unknown>, count: number, concurrency: number): Promise<void> {
  let left = count
  const worker = async (): Promise<void> => {
    while (left > 0) {
      left--
      await op()
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
}

const [url, kind, warmup, count, concurrency] = process.argv.slice(2)
if (!url || !kind || !warmup || !count || !concurrency) throw new Error('usage: instructions-worker.ts <url> <kind> <warmup> <count> <concurrency>')
const { db, op, cleanup } = await setup(url, kind as InstructionKind)
await runExactly(op, Number(warmup), Number(concurrency))
const parent = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
console.log('ready')
await parent.next()
await runExactly(op, Number(count), Number(concurrency))
console.log('done')
await parent.next()
parent.return?.()
await db.db.destroy()
cleanup()
