/**
 * The Node.js runtimes a bench runs its worker processes on.
 *
 * Why more than one: AsyncLocalStorage, which carries the query context, costs
 * very different amounts on different Node lines. Up to Node 22 it is built on
 * async_hooks promise hooks, which run JavaScript for every promise created and
 * every promise reaction in the process once any store is entered; from Node 24
 * (and on Node 22 with `--experimental-async-context-frame`) it is built on
 * V8's continuation-preserved data and costs nothing per promise. A figure
 * about the deadline path means little without saying which of the two it
 * was measured on, so the bench can measure several side by side in one run.
 *
 * `BENCH_NODES` is a comma-separated list; each entry is one of
 *   - `current`         the Node running the bench (the default),
 *   - a major version   such as `24`, fetched once from the npm registry's `node` package through npx,
 *   - a path            to a node binary,
 * optionally followed by `+acf`, which adds `--experimental-async-context-frame`
 * (Node 22 only; later lines have it on by default).
 *
 *   BENCH_NODES=current,22+acf,24 npx tsx bench/overhead.ts
 */
import { execFileSync } from 'node:child_process'
import { existsSync } from 'node:fs'

export interface NodeRuntime {
  /** Short label for tables: `node 20`, `node 22+acf`, ... */
  readonly label: string
  /** `process.version` of the binary. */
  readonly version: string
  readonly execPath: string
  /** Flags added to the worker's own (the tsx loader is inherited). */
  readonly execArgv: readonly string[]
  /** Whether AsyncLocalStorage runs on async context frames (no per-promise hooks). */
  readonly asyncContextFrame: boolean
}

const ACF_FLAG = '--experimental-async-context-frame'

export function nodeRuntimes(spec = process.env['BENCH_NODES'] ?? 'current'): NodeRuntime[] {
  const entries = spec
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
  if (entries.length === 0) throw new Error('BENCH_NODES: empty list')
  const runtimes = entries.map(resolveRuntime)
  const labels = new Set<string>()
  for (const runtime of runtimes) {
    if (labels.has(runtime.label)) throw new Error(`BENCH_NODES: ${runtime.label} is listed twice`)
    labels.add(runtime.label)
  }
  return runtimes
}

function resolveRuntime(entry: string): NodeRuntime {
  const acf = entry.endsWith('+acf')
  const base = acf ? entry.slice(0, -'+acf'.length) : entry
  let execPath: string
  if (base === 'current') execPath = process.execPath
  else if (/^\d+$/.test(base)) execPath = fetchNode(base)
  else if (existsSync(base)) execPath = base
  else throw new Error(`BENCH_NODES: ${JSON.stringify(entry)} is neither 'current', a major version nor an existing node binary`)
  const execArgv = acf ? [ACF_FLAG] : []
  const version = execFileSync(execPath, ['-p', 'process.version'], { encoding: 'utf8' }).trim()
  const major = Number(version.slice(1).split('.')[0])
  if (acf && major >= 24) throw new Error(`BENCH_NODES: ${entry}: Node ${major} has async context frames on by default; drop '+acf'`)
  if (acf && major !== 22) throw new Error(`BENCH_NODES: ${entry}: Node ${major} has no ${ACF_FLAG}`)
  return { label: `node ${major}${acf ? '+acf' : ''}`, version, execPath, execArgv, asyncContextFrame: acf || major >= 24 || (base === 'current' && inheritsAcfFlag()) }
}

/** A node binary of the given major version from the npm registry (cached by npx after the first run). */
function fetchNode(major: string): string {
  const out = execFileSync('npx', ['-y', '-p', `node@${major}`, 'node', '-p', 'process.execPath'], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  })
  const path = out.trim().split('\n').pop() ?? ''
  if (!existsSync(path)) throw new Error(`BENCH_NODES: could not get node@${major} through npx (got ${JSON.stringify(out)})`)
  return path
}

/** The running Node was itself started with the flag (on the command line or in NODE_OPTIONS, which workers inherit). */
function inheritsAcfFlag(): boolean {
  return process.execArgv.includes(ACF_FLAG) || (process.env['NODE_OPTIONS'] ?? '').includes(ACF_FLAG)
}
