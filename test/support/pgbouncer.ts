import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { freePort } from './free-port.js'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** Where Debian's package puts it; else whatever `pgbouncer` is on PATH. */
export function pgbouncerBinary(): string | undefined {
  if (existsSync('/usr/sbin/pgbouncer')) return '/usr/sbin/pgbouncer'
  const found = spawnSync('sh', ['-c', 'command -v pgbouncer'], { encoding: 'utf8' })
  const path = found.stdout.trim()
  return found.status === 0 && path ? path : undefined
}

export type PgBouncerPoolMode = 'transaction' | 'session'

export interface PgBouncerOptions {
  readonly poolMode: PgBouncerPoolMode
  /** Server connections per database/user pair. Default 4. */
  readonly defaultPoolSize?: number
  /** More `[pgbouncer]` settings (for example `query_timeout`). */
  readonly settings?: Readonly<Record<string, string | number>>
}

/** A PgBouncer of our own on 127.0.0.1, in front of one Postgres server. */
export interface PgBouncer {
  readonly port: number
  /** `serverUrl` (a database URL on the server) with PgBouncer's host and port. */
  urlFor(serverUrl: string): string
  /** True while the process runs and accepts a connection. */
  alive(): Promise<boolean>
  /** The last lines of PgBouncer's log, for failure messages. */
  logTail(lines?: number): string
  stop(): Promise<void>
}

/**
 * Starts PgBouncer 1.x with a generated config and auth file on a free port
 * of 127.0.0.1, as the `postgres` OS user when we are root (PgBouncer refuses
 * root). It logs into the server as the server URL's user and password.
 * Stopped by {@link PgBouncer.stop}, and in any case when this process ends:
 * it runs under a shell that kills it when our end of its stdin closes.
 */
export async function startPgBouncer(serverUrl: string, options: PgBouncerOptions): Promise<PgBouncer> {
  const binary = pgbouncerBinary()
  if (!binary) throw new Error('pgbouncer is not installed (apt-get install -y pgbouncer)')
  const server = new URL(serverUrl)
  const user = decodeURIComponent(server.username || 'postgres')
  const password = decodeURIComponent(server.password)
  const port = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'pg-governor-pgbouncer-'))
  const log = join(dir, 'pgbouncer.log')
  const settings: Record<string, string | number> = {
    listen_addr: '127.0.0.1',
    listen_port: port,
    unix_socket_dir: '',
    auth_type: 'trust',
    auth_file: join(dir, 'userlist.txt'),
    admin_users: user,
    pool_mode: options.poolMode,
    default_pool_size: options.defaultPoolSize ?? 4,
    max_client_conn: 500,
    logfile: log,
    pidfile: join(dir, 'pgbouncer.pid'),
    server_reset_query: 'DISCARD ALL',
    ...options.settings,
  }
  const login = `host=${server.hostname} port=${server.port || 5432} user=${user}${password ? ` password=${password}` : ''}`
  const config = ['[databases]', `* = ${login}`, '', '[pgbouncer]', ...Object.entries(settings).map(([key, value]) => `${key} = ${value}`), ''].join('\n')
  writeFileSync(join(dir, 'pgbouncer.ini'), config)
  writeFileSync(join(dir, 'userlist.txt'), `"${user}" "${password}"\n`)
  const asPostgres = process.getuid?.() === 0 ? postgresIds() : undefined
  if (asPostgres) {
    for (const file of ['', 'pgbouncer.ini', 'userlist.txt']) chownSync(join(dir, file), asPostgres.uid, asPostgres.gid)
  }
  // The shell ends PgBouncer when its stdin closes: our stop(), or this process gone however it ended.
  const child: ChildProcess = spawn('sh', ['-c', `"${binary}" "${join(dir, 'pgbouncer.ini')}" & pid=$!; cat >/dev/null; kill $pid; wait $pid`], {
    stdio: ['pipe', 'ignore', 'pipe'],
    ...(asPostgres ?? {}),
  })
  let stderr = ''
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const logTail = (lines = 20): string => {
    const text = existsSync(log) ? readFileSync(log, 'utf8') : ''
    return `${text.split('\n').slice(-lines).join('\n')}${stderr ? `\nstderr: ${stderr}` : ''}`
  }
  const alive = async (): Promise<boolean> => child.exitCode === null && (await accepts(port))
  const until = performance.now() + 10_000
  while (!(await accepts(port))) {
    if (child.exitCode !== null || performance.now() > until) {
      child.stdin?.end()
      throw new Error(`PgBouncer did not start on 127.0.0.1:${port}:\n${logTail()}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return {
    port,
    urlFor(url: string) {
      const parsed = new URL(url)
      parsed.hostname = '127.0.0.1'
      parsed.port = String(port)
      return parsed.toString()
    },
    alive,
    logTail,
    async stop() {
      child.stdin?.end()
      await exited
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

function postgresIds(): { uid: number; gid: number } {
  const id = (flag: string): number => Number(spawnSync('id', [flag, 'postgres'], { encoding: 'utf8' }).stdout.trim())
  const uid = id('-u')
  const gid = id('-g')
  if (!Number.isInteger(uid) || !Number.isInteger(gid)) throw new Error('PgBouncer refuses to run as root, and there is no `postgres` OS user to run it as')
  return { uid, gid }
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    socket.once('connect', () => {
      socket.destroy()
      resolve(true)
    })
    socket.once('error', () => resolve(false))
  })
}

