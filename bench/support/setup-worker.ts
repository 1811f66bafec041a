/**
 * A child process that runs one throughput setup, so that each setup has a
 * process of its own: its own heap and JIT state, and no AsyncLocalStorage
 * promise hooks switched on by another setup (on Node 20, the first
 * `withQueryContext` turns them on for every promise in the process).
 * Driven by bench/support/isolated.ts over the IPC channel.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import { governedDb, plainDb, select1, select1WithDeadline, type PlainDb } from './dialects.js'
import { loadGovernor } from './lib.js'
import { closedLoop } from './load.js'
import type { SetupKind, WorkerReply, WorkerRequest } from './isolated.js'
import { serveParent } from './worker-channel.js'

/** The governed setups that differ from the default config. */
const GOVERNED_CONFIG: Partial<Record<SetupKind, Parameters<typeof governedDb>[3]>> = {
  'governed-no-policy': { defaultTimeoutMs: null },
  // Every release goes back to pg-pool, as with Kysely's PostgresDialect.
  'governed-cold': { warmConnections: false },
}

let db: PlainDb | undefined
let op: (() => Promise<unknown>) | undefined
let sets = 0

async function init(kind: SetupKind, url: string, poolMax: number, timeoutMs: number): Promise<string> {
  if (kind === 'plain' || kind === 'plain-als') {
    db = plainDb(url, poolMax)
    const base = select1(db.db)
    if (kind === 'plain-als') {
      // What any AsyncLocalStorage costs on this Node: one store per request, as withQueryContext does.
      const storage = new AsyncLocalStorage<object>()
      op = () => storage.run({}, base)
    } else {
      op = base
    }
    return 'ready'
  }
  const { governor, label } = await loadGovernor()
  const governed = governedDb(governor, url, poolMax, GOVERNED_CONFIG[kind] ?? {})
  governed.dialect.events.on('statementTimeout', () => sets++)
  db = governed
  op = kind === 'deadline' ? select1WithDeadline(governor, governed.db, timeoutMs) : select1(governed.db)
  return label
}

serveParent<WorkerRequest, WorkerReply>(
  async (message) => {
    switch (message.type) {
      case 'init':
        return { type: 'ready', label: await init(message.kind, message.url, message.poolMax, message.timeoutMs) }
      case 'run': {
        if (!op) throw new Error('not initialised')
        const before = sets
        const result = await closedLoop(op, message.concurrency, message.durationMs)
        return { type: 'result', result, sets: sets - before }
      }
      case 'close':
        await db?.db.destroy()
        return { type: 'closed', sets }
    }
  },
  () => db?.db.destroy() ?? Promise.resolve(),
)
