import { spawnSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type * as GovernorModule from '../../src/index.js'

/** The pg-governor module under test. */
export type Governor = typeof GovernorModule

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
/** Under node_modules so that the compiled files resolve kysely and pg, and tsx leaves them alone. */
const CACHE_DIR = join(ROOT, 'node_modules', '.cache', 'pg-governor-bench')
/** Set by the parent for its worker processes, so that they load the very build it loaded. */
const BUILD_ENV = 'BENCH_GOVERNOR_BUILD'

/**
 * Loads the library under test. By default (`BENCH_LIB=build`) src/ is
 * compiled with the project's own tsc (tsconfig.build.json) into a private
 * folder named after a hash of src/, so that a file edited during a run
 * changes nothing for that run, and that JavaScript is measured, as users
 * run it. A src/ that does not compile stops the run (`BENCH_ALLOW_TSC_ERRORS=1`
 * measures tsc's output anyway). `BENCH_LIB=src` imports src/ through tsx
 * instead: tsx compiles with esbuild's keepNames, which wraps every closure
 * creation in a `__name()` call (Object.defineProperty) and adds a few
 * microseconds per query that the shipped build does not have.
 */
export async function loadGovernor(): Promise<{ governor: Governor; label: string }> {
  const mode = process.env['BENCH_LIB'] ?? 'build'
  if (mode === 'src') {
    label = 'src/ through tsx (BENCH_LIB=src)'
    return { governor: (await import('../../src/index.js')) as Governor, label }
  }
  if (mode !== 'build') throw new Error(`BENCH_LIB must be 'build' or 'src'; got ${JSON.stringify(mode)}`)
  let dir = process.env[BUILD_ENV]
  let how = 'as loaded by the parent process'
  if (!dir) {
    const hash = sourceHash(join(ROOT, 'src'))
    dir = join(CACHE_DIR, `lib-${hash}`)
    how = `hash ${hash}, cached`
    if (!existsSync(join(dir, '.complete'))) {
      compile(dir)
      how = `hash ${hash}, compiled now`
    }
    process.env[BUILD_ENV] = dir
  }
  const governor = (await import(pathToFileURL(join(dir, 'index.js')).href)) as Governor
  label = `src/ compiled by tsc (tsconfig.build.json), ${how}`
  return { governor, label }
}

let label = 'not loaded'

/** How the library under test was loaded, for the results file. */
export function governorLabel(): string {
  return label
}

function compile(dir: string): void {
  rmSync(dir, { recursive: true, force: true })
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
  const args = [tsc, '-p', 'tsconfig.build.json', '--outDir', dir, '--declaration', 'false', '--declarationMap', 'false', '--sourceMap', 'false']
  const result = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8' })
  if (result.status !== 0 || !existsSync(join(dir, 'index.js'))) {
    const output = `${result.stdout ?? ''}${result.stderr ?? ''}`.slice(0, 3000)
    if (process.env['BENCH_ALLOW_TSC_ERRORS'] !== '1' || !existsSync(join(dir, 'index.js'))) {
      rmSync(dir, { recursive: true, force: true })
      throw new Error(`src/ does not compile (someone may be editing it); nothing was measured. tsc said:\n${output}`)
    }
    console.warn(`[bench] tsc reported errors in src/; measuring its output anyway (BENCH_ALLOW_TSC_ERRORS=1):\n${output}`)
  }
  writeFileSync(join(dir, '.complete'), new Date().toISOString())
  // Builds of older states of src/ are of no further use once a day old.
  for (const entry of readdirSync(CACHE_DIR)) {
    const path = join(CACHE_DIR, entry)
    if (path !== dir && entry.startsWith('lib') && Date.now() - statSync(path).mtimeMs > 86_400_000) rmSync(path, { recursive: true, force: true })
  }
}

function sourceHash(dir: string): string {
  const hash = createHash('sha256')
  const walk = (d: string): void => {
    for (const entry of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(d, entry.name)
      if (entry.isDirectory()) walk(path)
      else if (entry.name.endsWith('.ts')) hash.update(path).update('\0').update(readFileSync(path)).update('\0')
    }
  }
  walk(dir)
  return hash.digest('hex').slice(0, 16)
}
