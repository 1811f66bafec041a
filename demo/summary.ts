/**
 * The side-by-side summary of the two runs: success rates per criticality,
 * latencies, how requests failed, and zombie backends.
 */
import { POOL_MAX, ROUTES, type Criticality } from './config.js'
import { bold, dim, ms, padEnd, pct, percentile } from './format.js'
import { select, type RequestResult } from './load-generator.js'
import type { RunResult } from './run-load.js'

const LABEL_WIDTH = 44
const COLUMN_WIDTH = 24

/** Requests the client waited for (it did not abort on purpose). */
function waitedFor(results: readonly RequestResult[]): RequestResult[] {
  return results.filter((r) => r.outcome !== 'aborted')
}

function successRate(results: readonly RequestResult[]): string {
  const considered = waitedFor(results)
  const ok = considered.filter((r) => r.outcome === 'ok').length
  return `${pct(ok, considered.length)} (${ok}/${considered.length})`
}

function latencies(results: readonly RequestResult[]): number[] {
  return results.map((r) => (r.settledAt ?? NaN) - r.startedAt)
}

function count(results: readonly RequestResult[], outcome: RequestResult['outcome']): number {
  return results.filter((r) => r.outcome === outcome).length
}

function row(label: string, cells: readonly string[]): string {
  return padEnd(`  ${label}`, LABEL_WIDTH) + cells.map((cell) => padEnd(cell, COLUMN_WIDTH)).join('')
}

function criticalityRows(runs: readonly RunResult[], criticality: Criticality): string[] {
  const of = (run: RunResult, phase?: 'normal' | 'slow') => select(run.requests, criticality, phase)
  return [
    bold(`${criticality} · ${ROUTES[criticality].label} · X-Request-Timeout ${ROUTES[criticality].timeoutMs} ms`),
    row('requests sent', runs.map((run) => String(of(run).length))),
    row('success (200), client aborts left out', runs.map((run) => successRate(of(run)))),
    row('  normal phase', runs.map((run) => successRate(of(run, 'normal')))),
    row('  slow phase', runs.map((run) => successRate(of(run, 'slow')))),
    row('p50 / p99 latency of the 200s', runs.map((run) => {
      const ok = latencies(of(run).filter((r) => r.outcome === 'ok'))
      return `${ms(percentile(ok, 50))} / ${ms(percentile(ok, 99))}`
    })),
    row('p99 until an answer or giving up', runs.map((run) => ms(percentile(latencies(waitedFor(of(run))), 99)))),
    row('503 shed / 504 deadline / gave up', runs.map((run) => `${count(of(run), 'shed')} / ${count(of(run), 'deadline')} / ${count(of(run), 'gave_up')}`)),
    row('client aborts / other errors', runs.map((run) => `${count(of(run), 'aborted')} / ${count(of(run), 'other')}`)),
  ]
}

export function printSummary(runs: readonly RunResult[]): void {
  const lines = [
    dim(padEnd('', LABEL_WIDTH) + runs.map((run) => padEnd(run.service, COLUMN_WIDTH)).join('')),
    ...criticalityRows(runs, 'critical'),
    '',
    ...criticalityRows(runs, 'sheddable'),
    '',
    bold('zombie backends · a query still running after its client has gone'),
    row('requests with a zombie query', runs.map((run) => String(run.zombies.queries))),
    row('peak zombie backends at once', runs.map((run) => `${run.zombies.peak} (pool max ${POOL_MAX})`)),
    row('zombie backend-seconds', runs.map((run) => run.zombies.backendSeconds.toFixed(1))),
    row('still queued for a connection at the end', runs.map((run) => String(run.queuedAtEnd))),
  ]
  for (const line of lines) console.log(line)
}

/** A few sentences on what the numbers say (they depend on the numbers: a short run may not overload the plain pool for long). */
export function printTakeaways(governed: RunResult, plain: RunResult): void {
  const slowCritical = (run: RunResult) => {
    const considered = waitedFor(select(run.requests, 'critical', 'slow'))
    return considered.length === 0 ? NaN : considered.filter((r) => r.outcome === 'ok').length / considered.length
  }
  const g = slowCritical(governed)
  const p = slowCritical(plain)
  const lines = [`- Checkout (critical) while the database was slow: ${pct(g, 1)} success with pg-governor, ${pct(p, 1)} with plain Kysely.`]
  if (p < g - 0.05) {
    lines.push('  Plain requests all wait in one pg-pool queue: checkout waits behind the report backlog until its clients give up.')
  } else {
    lines.push('  The slow phase was too short for pg-pool\'s queue to build up; a longer DEMO_SECONDS shows the cascade.')
  }
  const shed = governed.requests.filter((r) => r.outcome === 'shed')
  if (shed.length > 0) {
    lines.push(
      `- pg-governor refused ${shed.length} report requests up front (503 + Retry-After, p99 ${ms(percentile(latencies(shed), 99))}) ` +
        'to keep connections free for checkout;',
      '  plain Kysely accepted every one and made all of them wait.',
    )
  }
  lines.push(
    `- Zombie work: ${governed.zombies.backendSeconds.toFixed(1)} backend-seconds with pg-governor, which cancels a query on the server when its client`,
    `  leaves or its deadline passes; ${plain.zombies.backendSeconds.toFixed(1)} with plain Kysely, where ${plain.zombies.queries} queries ran on after their client had gone` +
      (plain.queuedAtEnd > 0 ? `,\n  and ${plain.queuedAtEnd} more were still queued for nobody when the load ended.` : '.'),
  )
  console.log(lines.join('\n'))
}
