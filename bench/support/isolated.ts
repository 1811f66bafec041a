import { fileURLToPath } from 'node:url'
import type { RunResult, Setup } from './load.js'
import type { NodeRuntime } from './node-runtimes.js'
import { forkWorker } from './worker-channel.js'

export type SetupKind = 'plain' | 'plain-als' | 'governed' | 'governed-no-policy' | 'governed-cold' | 'deadline'

export type WorkerRequest =
  | { type: 'init'; kind: SetupKind; url: string; poolMax: number; timeoutMs: number }
  | { type: 'run'; concurrency: number; durationMs: number }
  | { type: 'close' }

export type WorkerReply =
  | { type: 'ready'; label: string }
  | { type: 'result'; result: RunResult; sets: number }
  | { type: 'closed'; sets: number }
  | { type: 'error'; message: string }

/** A setup running in a child process of its own (see setup-worker.ts). */
export interface IsolatedSetup extends Setup {
  /** statement_timeout SETs the setup's dialect sent so far. */
  readonly sets: () => number
  close(): Promise<void>
}

const WORKER = fileURLToPath(new URL('./setup-worker.ts', import.meta.url))

/**
 * Forks a worker for one setup. The child runs under this process's tsx
 * loader, on `options.runtime` when given (see node-runtimes.ts), else on this
 * process's Node; with `pin`, on the client's CPU (see cpu-pinning.ts).
 */
export async function isolatedSetup(
  name: string,
  kind: SetupKind,
  options: { url: string; poolMax: number; timeoutMs?: number; runtime?: NodeRuntime; pin?: boolean },
): Promise<IsolatedSetup> {
  const { runtime } = options
  const worker = forkWorker<WorkerRequest, WorkerReply>(name, WORKER, { execPath: runtime?.execPath, execArgv: runtime?.execArgv ?? [], pin: options.pin === true })
  let sets = 0
  await worker.ask({ type: 'init', kind, url: options.url, poolMax: options.poolMax, timeoutMs: options.timeoutMs ?? 5000 })
  return {
    name,
    sets: () => sets,
    async run(concurrency: number, durationMs: number): Promise<RunResult> {
      const reply = await worker.ask({ type: 'run', concurrency, durationMs })
      if (reply.type !== 'result') throw new Error(`${name} worker: unexpected ${reply.type}`)
      sets += reply.sets
      return reply.result
    },
    async close(): Promise<void> {
      await worker.close({ type: 'close' }, 5000)
    },
  }
}
