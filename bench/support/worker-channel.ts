/**
 * The request/reply channel between a bench and the worker processes that run
 * its setups (setup-worker.ts, telemetry-worker.ts): one request at a time,
 * an `{ type: 'error' }` reply rejects, a worker that exits rejects what is
 * pending.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { CLIENT_CPU, pinProcess } from './cpu-pinning.js'

/** Every reply has a type; `error` carries the worker's message. */
export type Reply = { readonly type: string } | { readonly type: 'error'; readonly message: string }

export interface WorkerChannel<Request, R extends Reply> {
  readonly child: ChildProcess
  /** Sends one request and resolves with its reply (never an `error` reply: that rejects). */
  ask(request: Request): Promise<Exclude<R, { type: 'error' }>>
  /** Asks the worker to close with `request` (if it still runs), then waits for it to exit, killing it after `killAfterMs`. */
  close(request: Request, killAfterMs: number): Promise<R | undefined>
}

/**
 * Forks `file` with this process's execArgv (the tsx loader) plus `execArgv`,
 * on `execPath` when given, pinned to the client's CPU when `pin`.
 */
export function forkWorker<Request, R extends Reply>(
  name: string,
  file: string,
  options: { readonly execPath?: string | undefined; readonly execArgv?: readonly string[]; readonly pin?: boolean } = {},
): WorkerChannel<Request, R> {
  const child = fork(file, [], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv: [...process.execArgv, ...(options.execArgv ?? [])],
    ...(options.execPath ? { execPath: options.execPath } : {}),
  })
  if (options.pin && child.pid !== undefined) pinProcess(child.pid, CLIENT_CPU)
  let pending: { resolve: (reply: R) => void; reject: (error: Error) => void } | undefined
  child.on('message', (reply: R) => {
    const waiter = pending
    pending = undefined
    if (!waiter) return
    if (reply.type === 'error') waiter.reject(new Error(`${name} worker: ${(reply as { message?: string }).message}`))
    else waiter.resolve(reply)
  })
  const exited = new Promise<void>((resolve) =>
    child.on('exit', (code) => {
      const waiter = pending
      pending = undefined
      waiter?.reject(new Error(`${name} worker exited with code ${code}`))
      resolve()
    }),
  )
  const ask = (request: Request): Promise<Exclude<R, { type: 'error' }>> =>
    new Promise((resolve, reject) => {
      if (pending) throw new Error('one request at a time')
      pending = { resolve: resolve as (reply: R) => void, reject }
      child.send(request as object)
    })
  return {
    child,
    ask,
    async close(request: Request, killAfterMs: number): Promise<R | undefined> {
      if (child.exitCode !== null || child.signalCode !== null) return undefined
      let reply: R | undefined
      try {
        reply = await ask(request)
      } catch (error) {
        console.error(`[${name}] close failed:`, error instanceof Error ? error.message : error)
      }
      const timer = setTimeout(() => child.kill(), killAfterMs)
      await exited
      clearTimeout(timer)
      return reply
    },
  }
}

/**
 * The worker's side: answers each request from the parent with `handle`'s
 * reply (a throw becomes an `error` reply), disconnects after replying to a
 * request whose reply is of type `closed`, and runs `onParentGone` (then
 * exits, at most 2 s later) when the parent goes away.
 */
export function serveParent<Request, R extends Reply>(handle: (request: Request) => Promise<R>, onParentGone: () => Promise<unknown>): void {
  const reply = (message: Reply): void => {
    process.send?.(message)
  }
  process.on('message', (request: Request) => {
    handle(request).then(
      (answer) => {
        reply(answer)
        if (answer.type === 'closed') process.disconnect?.()
      },
      (error: unknown) => reply({ type: 'error', message: error instanceof Error ? (error.stack ?? error.message) : String(error) }),
    )
  })
  // The parent went away (it exited or was killed): do not linger with an open pool.
  process.on('disconnect', () => {
    const timer = setTimeout(() => process.exit(0), 2000)
    timer.unref()
    void onParentGone().finally(() => process.exit(0))
  })
}
