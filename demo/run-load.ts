/**
 * One run: the load plan against one service, with the slow phase switched on
 * halfway, the zombie sampler and the live view running alongside.
 */
import type pg from 'pg'
import type { Phase } from './config.js'
import { setSlowness } from './database.js'
import { LoadGenerator, sleep, type RequestResult } from './load-generator.js'
import type { LoadPlan } from './load-plan.js'
import { LiveView } from './live-view.js'
import type { DemoService } from './service.js'
import { ZombieSampler, type ZombieStats } from './zombie-sampler.js'

export interface RunResult {
  readonly service: string
  readonly requests: readonly RequestResult[]
  readonly zombies: ZombieStats
  /** Requests still waiting for a connection when the last client was done: work nobody waits for any more. */
  readonly queuedAtEnd: number
}

export interface RunContext {
  /** Runs the settings updates. */
  readonly admin: pg.Client
  /** Samples pg_stat_activity (a connection of its own, so samples never wait behind settings updates). */
  readonly monitor: pg.Client
  readonly databaseName: string
  readonly plan: LoadPlan
  readonly title: string
}

export async function runLoad(service: DemoService, context: RunContext): Promise<RunResult> {
  const { admin, monitor, databaseName, plan, title } = context
  await setSlowness(admin, 'normal')
  const load = new LoadGenerator()
  const sampler = new ZombieSampler(monitor, databaseName, (id) => load.settledAt(id))
  const started = performance.now()
  let phase: Phase = 'normal'
  const view = new LiveView(title, service.name, () => ({
    elapsedMs: performance.now() - started,
    durationMs: plan.durationMs,
    phase,
    sending: load.sending,
    gauge: service.gauge(),
    counts: load.counts(),
    inFlight: load.inFlight,
    zombies: sampler.stats(),
  }))

  sampler.start()
  view.start()
  const slowPhase = sleep(plan.slowFromMs).then(async () => {
    await setSlowness(admin, 'slow')
    phase = 'slow'
  })
  slowPhase.catch(() => {}) // awaited below; this only keeps an early failure from counting as unhandled
  let zombies: ZombieStats
  let queuedAtEnd: number
  try {
    await load.run(plan, service.url)
    await slowPhase
    queuedAtEnd = service.gauge().waiting
  } finally {
    zombies = await sampler.stop()
    view.stop()
  }
  return { service: service.name, requests: load.results, zombies, queuedAtEnd }
}
