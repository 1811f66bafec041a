import { loadavg } from 'node:os'
import { envFlag, envInt } from './env.js'
import { loadGovernor, type Governor } from './lib.js'
import { startBenchServer, type BenchServer } from './server.js'

/**
 * Runs one bench script: loads the library under test (see lib.ts), starts the server, runs `body`, stops the server and
 * exits. A watchdog (`BENCH_MAX_SECONDS`, default 300) ends a run that hangs.
 * The exit code is 0 when the run completed, whatever the verdicts, unless
 * `BENCH_STRICT=1`, where a MISS exits 1.
 */
export function runBench(name: string, body: (server: BenchServer, governor: Governor) => Promise<{ allPassed: boolean }>): void {
  const startedAt = performance.now()
  let server: BenchServer | undefined
  const maxSeconds = envInt('BENCH_MAX_SECONDS', 300)
  const watchdog = setTimeout(() => {
    console.error(`\n[${name}] watchdog: still running after ${maxSeconds} s (BENCH_MAX_SECONDS); giving up`)
    void (server?.stop() ?? Promise.resolve()).finally(() => process.exit(2))
  }, maxSeconds * 1000)
  watchdog.unref()
  const main = async (): Promise<number> => {
    const { governor, label } = await loadGovernor()
    server = await startBenchServer()
    console.log(`[${name}] PostgreSQL ${server.version} (${server.source}, max_connections ${server.maxConnections}); node ${process.version}; pg-governor: ${label}; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`)
    try {
      const { allPassed } = await body(server, governor)
      console.log(`\n[${name}] done in ${((performance.now() - startedAt) / 1000).toFixed(1)} s; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`)
      return !allPassed && envFlag('BENCH_STRICT') ? 1 : 0
    } finally {
      await server.stop()
    }
  }
  main().then(
    (code) => process.exit(code),
    (error: unknown) => {
      console.error(`[${name}] failed:`, error)
      process.exit(1)
    },
  )
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
