/**
 * Optional CPU pinning for the throughput benches: the Postgres server on one
 * core, the measured client process on another.
 *
 * Why: unpinned, the client and the server's backends share both cores and the
 * scheduler migrates them at will, so one setup's ops/s moves by 30-50% between
 * half-second rounds on the 2-core VMs we measure on, more than the effects we
 * try to see. Pinned, the rounds are steadier, and the client's core is the
 * bottleneck (`select 1` costs the client more CPU than the server), so every
 * microsecond the library adds shows in full in ops/s instead of being diluted
 * by server time, as for a service whose database runs on another host.
 *
 * `BENCH_PIN`: `1` pins (the default when the machine has at least 2 CPUs and
 * `taskset` is on the PATH), `0` does not. Pinning needs the right to change
 * the server's affinity (same user or root); a server that cannot be pinned
 * (another host, another user) stops the run with an error that says so. The
 * server's processes get all CPUs back when the run ends.
 */
import { execFileSync, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { cpus } from 'node:os'
import pg from 'pg'

export const SERVER_CPU = 0
export const CLIENT_CPU = 1

/** Whether this run pins (BENCH_PIN, or its default). */
export function pinningWanted(): boolean {
  const raw = process.env['BENCH_PIN']
  if (raw === '0' || raw === 'false' || raw === 'no') return false
  const possible = cpus().length >= 2 && spawnSync('taskset', ['--version']).status === 0
  if ((raw === '1' || raw === 'true' || raw === 'yes') && !possible) throw new Error('BENCH_PIN=1 needs 2 CPUs and taskset (util-linux)')
  return possible
}

/** Sets the CPU affinity of a process and all its threads (threads started later inherit it). */
export function pinProcess(pid: number, cpu: number): void {
  execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { stdio: 'ignore' })
}

/** What {@link pinServer} did, and how to undo it. */
export interface ServerPinning {
  readonly description: string
  /** Gives the server's processes every CPU again. */
  release(): void
}

/**
 * Pins the server behind `url` to {@link SERVER_CPU}: its postmaster (whose
 * later children, the bench's backends among them, inherit the affinity) and
 * every process it has already started.
 */
export async function pinServer(url: string): Promise<ServerPinning> {
  const client = new pg.Client({ connectionString: url })
  await client.connect()
  let postmaster: number
  try {
    const backend = (await client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]?.pid ?? 0
    // Read while the backend still exists: it is gone once the client ends.
    postmaster = parentOf(backend)
  } catch (error) {
    throw new Error(`could not find the server's processes (BENCH_PIN=0 runs unpinned): ${error instanceof Error ? error.message : String(error)}`)
  } finally {
    await client.end()
  }
  try {
    const children = execFileSync('pgrep', ['-P', String(postmaster)], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number)
    for (const pid of [postmaster, ...children]) pinProcess(pid, SERVER_CPU)
    return {
      description: `server (postmaster ${postmaster} and the ${children.length} processes it runs) on CPU ${SERVER_CPU}, each measured client process on CPU ${CLIENT_CPU}`,
      release: () => {
        const all = `0-${cpus().length - 1}`
        const now = execFileSync('pgrep', ['-P', String(postmaster)], { encoding: 'utf8' }).split('\n').filter(Boolean)
        for (const pid of [String(postmaster), ...now]) spawnSync('taskset', ['-a', '-p', '-c', all, pid], { stdio: 'ignore' })
      },
    }
  } catch (error) {
    throw new Error(`could not pin the server's processes (BENCH_PIN=0 runs unpinned): ${error instanceof Error ? error.message : String(error)}`)
  }
}

function parentOf(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const ppid = /^PPid:\s+(\d+)/m.exec(status)?.[1]
  if (!ppid) throw new Error(`no parent for pid ${pid} (is the server on this host?)`)
  return Number(ppid)
}
