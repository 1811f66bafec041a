/**
 * One instance of bench/fleet.ts, in a process of its own. Reads its setup
 * from the environment (FLEET_*), waits for the common start time, offers
 * open-loop traffic and prints one JSON line with what its callers saw.
 */
import { Kysely, PostgresDialect, sql } from 'kysely'
import pg from 'pg'
import { GovernedPostgresDialect, LoadShedError, DeadlineExceededError, isCapacityRefusal, withQueryContext, type Criticality } from '../../src/index.js'
import { isConnectionFailure } from '../../src/admission/circuit-breaker.js'
import { fixedRateArrivals, seededRandom } from './open-loop.js'

export type FleetSetup = 'kysely' | 'governed' | 'governed-saturation' | 'kysely-pgbouncer' | 'governed-pgbouncer'

/** What one instance reports. */
export interface FleetWorkerReport {
  readonly critical: { readonly ok: number; readonly total: number }
  readonly sheddable: { readonly ok: number; readonly total: number }
  /** Errors callers saw, by kind: connection (53300 and connect failures), shed, deadline, other. */
  readonly errors: Record<'connection' | 'shed' | 'deadline' | 'other', number>
  /** A few distinct messages of `other` and `connection` errors, for the log. */
  readonly samples: readonly string[]
  /** Why critical requests failed: kind (the shed reason for sheds) @ the half second of the run. */
  readonly criticalFailures: Record<string, number>
  /** Connections the pool held, each half second (pg-pool's totalCount), and the governor's ceiling. */
  readonly held: readonly number[]
  readonly ceilings: readonly number[]
  /** When the server's limits were read, after the start (governed), and the fair share they gave. */
  readonly limitsAfterMs?: number | undefined
  readonly fairShare?: number | undefined
  /** BENCH_TRACE_START: what happened in the first FLEET_TRACE_MS, one line per change (ms since the start). */
  readonly startTrace?: readonly string[] | undefined
  readonly durationS: number
  readonly lagMaxMs: number
}

const env = (name: string): string => {
  const value = process.env[name]
  if (value === undefined) throw new Error(`fleet worker: ${name} is not set`)
  return value
}
const setup = env('FLEET_SETUP') as FleetSetup
const rate = Number(env('FLEET_RATE'))
const seconds = Number(env('FLEET_SECONDS'))
const deadlineMs = Number(env('FLEET_DEADLINE_MS'))
const sleepS = Number(env('FLEET_SLEEP_MS')) / 1000
const criticalPct = Number(env('FLEET_CRITICAL_PCT'))
const pool = new pg.Pool({ connectionString: env('FLEET_URL'), max: Number(env('FLEET_POOL_MAX')), idleTimeoutMillis: Number(env('FLEET_IDLE_MS')), application_name: 'fleet bench' })
// Kysely's PostgresDialect adds no 'error' listener; an idle client dropped at the end would crash the process.
pool.on('error', () => {})
const instances = Number(env('FLEET_INSTANCES'))
const governed = setup.startsWith('kysely')
  ? undefined
  : new GovernedPostgresDialect({
      pool,
      // Behind PgBouncer there is no control connection: no limits check and no sampling (README, Many instances).
      pooler: setup === 'governed-pgbouncer' ? 'pgbouncer-transaction' : 'none',
      fleet: { expectedInstances: instances, saturation: setup === 'governed-saturation' ? { intervalMs: 500 } : false },
    })
const db = new Kysely<any>({ dialect: governed ?? new PostgresDialect({ pool }) })
let limitsAtMs: number | undefined
let fairShare: number | undefined
governed?.events.on('serverLimits', (event) => {
  limitsAtMs = performance.now()
  fairShare = event.fits ? undefined : event.suggestedPoolMax
})

const traceMs = Number(process.env['FLEET_TRACE_MS'] ?? 0)
const startTrace: string[] = []
const trace = (line: string): void => {
  const at = performance.now() - began
  if (traceMs > 0 && at <= traceMs) startTrace.push(`${at.toFixed(0).padStart(5)} ${line}`)
}
governed?.events.on('capacity', (event) => {
  const code = (event.error as { code?: string } | undefined)?.code
  trace(`capacity ${event.change} -> ceiling ${event.ceiling}${code ? ` (${code})` : ''}`)
})
governed?.events.on('acquire', (event) => {
  if (event.createMs !== undefined) trace(`acquire ${event.criticality ?? ''} waited ${event.waitedMs.toFixed(0)} connect ${event.createMs.toFixed(0)}`)
})
governed?.events.on('release', (event) => trace(`release held ${event.heldMs.toFixed(0)}`))
governed?.events.on('serverLimits', (event) => trace(`serverLimits usable ${event.usableSlots} fits ${event.fits} share ${event.suggestedPoolMax}`))

const report = {
  critical: { ok: 0, total: 0 },
  sheddable: { ok: 0, total: 0 },
  errors: { connection: 0, shed: 0, deadline: 0, other: 0 },
  samples: [] as string[],
  criticalFailures: {} as Record<string, number>,
  held: [] as number[],
  ceilings: [] as number[],
}

function classify(error: unknown): keyof FleetWorkerReport['errors'] {
  if (error instanceof LoadShedError) return 'shed'
  if (isCapacityRefusal(error) || isConnectionFailure(error)) return 'connection'
  if (error instanceof DeadlineExceededError) return 'deadline'
  const name = (error as { name?: unknown } | null)?.name
  if (name === 'TimeoutError' || name === 'AbortError') return 'deadline'
  return 'other'
}

async function request(criticality: Criticality): Promise<void> {
  const bucket = criticality === 'critical' ? report.critical : report.sheddable
  bucket.total++
  const statement = sql`select pg_sleep(${sleepS})`
  try {
    if (!governed) await statement.execute(db, { signal: AbortSignal.timeout(deadlineMs) })
    else await withQueryContext({ timeoutMs: deadlineMs, criticality }, () => statement.execute(db))
    bucket.ok++
  } catch (error) {
    const kind = classify(error)
    report.errors[kind]++
    if (criticality === 'critical') {
      const detail = error instanceof LoadShedError ? `${error.reason}: ${error.message}` : `${(error as { phase?: string }).phase ?? ''} ${error instanceof Error ? error.message : String(error)}`
      trace(`critical failed ${kind} ${detail.slice(0, 200)}`)
      const key = `${error instanceof LoadShedError ? `shed:${error.reason}` : kind}@${Math.floor((performance.now() - began) / 500) / 2}s`
      report.criticalFailures[key] = (report.criticalFailures[key] ?? 0) + 1
    }
    const message = `${kind}: ${(error as { code?: string }).code ?? ''} ${error instanceof Error ? error.message : String(error)}`.slice(0, 160)
    if ((kind === 'other' || kind === 'connection') && report.samples.length < 3 && !report.samples.includes(message)) report.samples.push(message)
  }
}

// Loaded: say so, and wait for the common start (epoch ms) on stdin.
process.stdout.write('ready\n')
const startAt = await new Promise<number>((resolve) => {
  let input = ''
  process.stdin.on('data', (chunk: Buffer) => {
    input += chunk.toString()
    if (input.includes('\n')) resolve(Number(input.trim()))
  })
})
process.stdin.pause()
await new Promise((resolve) => setTimeout(resolve, Math.max(0, startAt - Date.now())))
const random = seededRandom(Number(env('FLEET_SEED')))
const pending: Promise<void>[] = []
const began = performance.now()
trace(`began ${Date.now() - startAt} ms after the common start`)
let lastSnapshot = ''
let lastTick = began
const cpuAtStart = process.cpuUsage()
const snapshots = traceMs > 0 ? setInterval(() => {
  const stats = governed?.poolStats()
  const line = stats
    ? `pool total ${stats.total} idle ${stats.idle} permits ${stats.permits} waiting ${stats.waiting} ceiling ${stats.ceiling} circuit ${stats.circuit} meanUse ${stats.meanUseMs.toFixed(0)}`
    : `pool total ${pool.totalCount} idle ${pool.idleCount} waiting ${pool.waitingCount}`
  const lag = performance.now() - lastTick - 10
  lastTick = performance.now()
  const cpu = process.cpuUsage(cpuAtStart)
  if (line !== lastSnapshot || lag > 30) trace(`${line}${lag > 30 ? ` (event loop ${lag.toFixed(0)} ms late)` : ''}; cpu ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms`)
  lastSnapshot = line
  if (performance.now() - began > traceMs) clearInterval(snapshots)
}, 10) : undefined
const tracer = setInterval(() => {
  report.held.push(pool.totalCount)
  if (governed) report.ceilings.push(governed.poolStats().ceiling)
}, 500)
const loop = await fixedRateArrivals(rate, rate * seconds, () => {
  pending.push(request(random() * 100 < criticalPct ? 'critical' : 'sheddable'))
})
await Promise.all(pending)
clearInterval(tracer)
if (snapshots) clearInterval(snapshots)
const out: FleetWorkerReport = { ...report, startTrace: traceMs > 0 ? startTrace : undefined, limitsAfterMs: limitsAtMs === undefined ? undefined : Math.round(limitsAtMs - began), fairShare, durationS: (performance.now() - began) / 1000, lagMaxMs: loop.lagMaxMs }
process.stdout.write(`${JSON.stringify(out)}\n`)
await db.destroy()
