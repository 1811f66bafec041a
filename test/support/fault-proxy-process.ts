import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Direction, DirectionToxics, FaultProxy, ProxyMode } from './fault-proxy.js'

/** A command to the child, in the order the parent gave them. */
export type ProxyCommand =
  | { readonly op: 'toxics'; readonly seq: number; readonly direction: Direction; readonly toxics: DirectionToxics }
  | { readonly op: 'mode'; readonly seq: number; readonly mode: ProxyMode }
  | { readonly op: 'timeout' | 'refuseFor'; readonly seq: number; readonly ms: number }
  | { readonly op: 'hold' | 'heal' | 'reset' | 'clear' | 'close'; readonly seq: number }

/** What the child tells the parent. */
export type ProxyReport =
  | { readonly type: 'ready'; readonly url: string; readonly port: number }
  | { readonly type: 'counts'; readonly connections: number; readonly accepted: number }
  | { readonly type: 'done'; readonly seq: number }
  | { readonly type: 'closed' }

const CHILD = fileURLToPath(new URL('./fault-proxy-child.ts', import.meta.url))

/**
 * The fault proxy of fault-proxy.ts in a child process of its own, behind the
 * same {@link FaultProxy} interface: the proxy's timers and copies then do not
 * stall the event loop of the process that measures (a bench's lateness
 * figures would include the proxy's own stalls). Commands are sent at once
 * and applied in order within a fraction of a millisecond; `settled()`
 * resolves when the child has applied every command sent so far.
 * `connections` and `accepted` are the child's counts as last reported
 * (every 5 ms when they change). Needs this process's loader for TypeScript
 * (run under tsx).
 *
 * @example
 * ```ts
 * const proxy = await startFaultProxyProcess(server.url, { seed: 1_000 })
 * proxy.hold()
 * await proxy.settled()
 * ```
 */
export async function startFaultProxyProcess(url: string, options: { readonly seed?: number } = {}): Promise<FaultProxy & { settled(): Promise<void> }> {
  const child = fork(CHILD, options.seed === undefined ? [url] : [url, String(options.seed)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    execArgv: process.execArgv,
    serialization: 'advanced',
  })
  let counts = { connections: 0, accepted: 0 }
  let mode: ProxyMode = 'forward'
  let seq = 0
  let doneUpTo = 0
  const waiting: { readonly seq: number; readonly resolve: () => void }[] = []
  let closed: (() => void) | undefined
  const ready = new Promise<{ url: string; port: number }>((resolve, reject) => {
    child.once('error', reject)
    child.once('exit', (code) => reject(new Error(`the fault proxy process exited (${String(code)}) before it was ready`)))
    child.on('message', (report: ProxyReport) => {
      if (report.type === 'ready') resolve(report)
      else if (report.type === 'counts') counts = report
      else if (report.type === 'done') {
        doneUpTo = report.seq
        while (waiting.length > 0 && (waiting[0]?.seq ?? Infinity) <= doneUpTo) waiting.shift()?.resolve()
      } else closed?.()
    })
  })
  const { url: proxiedUrl, port } = await ready
  const send = (command: ProxyCommand extends infer C ? (C extends unknown ? Omit<C, 'seq'> : never) : never): void => {
    child.send({ ...command, seq: ++seq })
  }
  return {
    url: proxiedUrl,
    port,
    get mode() {
      return mode
    },
    set mode(value: ProxyMode) {
      mode = value
      send({ op: 'mode', mode: value })
    },
    get connections() {
      return counts.connections
    },
    get accepted() {
      return counts.accepted
    },
    toxics: (direction, toxics) => send({ op: 'toxics', direction, toxics }),
    hold: () => send({ op: 'hold' }),
    heal: () => send({ op: 'heal' }),
    timeout: (ms) => send({ op: 'timeout', ms }),
    reset: () => send({ op: 'reset' }),
    refuseFor: (ms) => send({ op: 'refuseFor', ms }),
    clear: () => {
      mode = 'forward'
      send({ op: 'clear' })
    },
    settled: () => (doneUpTo >= seq ? Promise.resolve() : new Promise<void>((resolve) => waiting.push({ seq, resolve }))),
    close: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || !child.connected) return resolve()
        const killer = setTimeout(() => child.kill('SIGKILL'), 5_000)
        child.once('exit', () => {
          clearTimeout(killer)
          resolve()
        })
        closed = () => {}
        send({ op: 'close' })
      }),
  }
}
