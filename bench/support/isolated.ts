import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { RunResult, Setup } from './load.js'
import { CLIENT_CPU, pinProcess } from './cpu-pinning.js'
import type { NodeRuntime } from './node-runtimes.js'

export type SetupKind = 'plain' | 'plain-als' | 'governed' | 'governed-no-policy' | 'deadline'

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
 * Forks a worker for one setup. The child inherits this process's execArgv,
 * so it runs under the same tsx loader, on `options.runtime` when given (see
 * node-runtimes.ts), else on this process's Node; with `pin`, on the
 * client's CPU (see cpu-pinning.ts).
 */
export async function isolatedSetup(
  name: string,
  kind: SetupKind,
  options: { url: string; poolMax: number; timeoutMs?: number; runtime?: NodeRuntime; pin?: boolean },
): Promise<IsolatedSetup> {
  const { runtime } = options
  const child = fork(WORKER, [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    ...(runtime ? { execPath: runtime.execPath, execArgv: [...process.execArgv, ...runtime.execArgv] } : {}),
  })
  if (options.pin && child.pid !== undefined) pinProcess(child.pid, CLIENT_CPU)
  let sets = 0
  let pending: { resolve: (reply: WorkerReply) => void; reject: (error: Error) => void } | undefined
  child.on('message', (reply: WorkerReply) => {
    const waiter = pending
    pending = undefined
    if (!waiter) return
    if (reply.type === 'error') waiter.reject(new Error(`${name} worker: ${reply.message}`))
    else waiter.resolve(reply)
  })
  child.on('exit', (code) => {
    const waiter = pending
    pending = undefined
    waiter?.reject(new Error(`${name} worker exited with code ${code}`))
  })
  const ask = (request: WorkerRequest): Promise<WorkerReply> =>
    new Promise((resolve, reject) => {
      if (pending) throw new Error('one request at a time')
      pending = { resolve, reject }
      child.send(request)
    })
  await ask({ type: 'init', kind, url: options.url, poolMax: options.poolMax, timeoutMs: options.timeoutMs ?? 5000 })
  return {
    name,
    sets: () => sets,
    async run(concurrency: number, durationMs: number): Promise<RunResult> {
      const reply = await ask({ type: 'run', concurrency, durationMs })
      if (reply.type !== 'result') throw new Error(`${name} worker: unexpected ${reply.type}`)
      sets += reply.sets
      return reply.result
    },
    async close(): Promise<void> {
      await closeChild(child, ask)
    },
  }
}

async function closeChild(child: ChildProcess, ask: (request: WorkerRequest) => Promise<WorkerReply>): Promise<void> {
  if (child.exitCode !== null) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  try {
    await ask({ type: 'close' })
  } catch {
    // exited already
  }
  const timer = setTimeout(() => child.kill(), 5000)
  await exited
  clearTimeout(timer)
}
