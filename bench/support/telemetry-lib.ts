/**
 * Loads `pg-governor/prometheus` the way bench/support/lib.ts loads the main
 * entry point, so that the metrics module and the dialect come from the same
 * build (one copy of every module, as an application importing the published
 * package gets).
 *
 * package.json maps the subpath to dist/telemetry/prometheus-metrics.js; the
 * bench's build (tsc over src/ with tsconfig.build.json, rootDir src) has the
 * same layout under the folder lib.ts compiled into, which lib.ts hands to
 * its worker processes in BENCH_GOVERNOR_BUILD. The build lives under
 * node_modules/.cache, so its `import 'prom-client'` resolves to the
 * project's own prom-client.
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import type * as PrometheusModule from '../../src/telemetry/prometheus-metrics.js'
import { loadGovernor, type Governor } from './lib.js'

export type Prometheus = typeof PrometheusModule

/** The file of the `./prometheus` export, relative to the build's root (dist/ in the package). */
export const PROMETHEUS_SUBPATH = join('telemetry', 'prometheus-metrics.js')

export async function loadGovernorWithPrometheus(): Promise<{ governor: Governor; prometheus: Prometheus; label: string; prometheusFile: string }> {
  const { governor, label } = await loadGovernor()
  const mode = process.env['BENCH_LIB'] ?? 'build'
  if (mode === 'src') {
    return { governor, label, prometheus: (await import('../../src/telemetry/prometheus-metrics.js')) as Prometheus, prometheusFile: 'src/telemetry/prometheus-metrics.ts' }
  }
  // loadGovernor() has set it (or inherited it from the parent) in build mode.
  const dir = process.env['BENCH_GOVERNOR_BUILD']
  if (!dir) throw new Error('BENCH_GOVERNOR_BUILD is not set after loadGovernor(): bench/support/lib.ts changed how it names its build')
  const file = join(dir, PROMETHEUS_SUBPATH)
  if (!existsSync(file)) throw new Error(`the build in ${dir} has no ${PROMETHEUS_SUBPATH}: is src/telemetry/prometheus-metrics.ts gone or moved?`)
  return { governor, label, prometheus: (await import(pathToFileURL(file).href)) as Prometheus, prometheusFile: file }
}
