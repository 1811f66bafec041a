/**
 * The live view of a run, redrawn every VIEW_INTERVAL_MS: pool gauges,
 * outcomes per criticality and zombie backends. On a terminal it redraws a
 * block in place with plain ANSI codes; otherwise (CI, a pipe) it prints one
 * line per refresh.
 */
import { CRITICALITIES, ROUTES, VIEW_INTERVAL_MS, type Criticality, type Phase } from './config.js'
import { describeSlowness } from './database.js'
import { bold, cyan, dim, green, isTty, magenta, padEnd, padStart, red, yellow } from './format.js'
import type { OutcomeCounts } from './load-generator.js'
import type { PoolGauge } from './service.js'
import type { ZombieStats } from './zombie-sampler.js'

export interface LiveSnapshot {
  readonly elapsedMs: number
  readonly durationMs: number
  readonly phase: Phase
  /** False once every planned request has been sent and only answers are awaited. */
  readonly sending: boolean
  readonly gauge: PoolGauge
  readonly counts: Record<Criticality, OutcomeCounts>
  readonly inFlight: number
  readonly zombies: ZombieStats
}

export class LiveView {
  readonly #title: string
  readonly #name: string
  readonly #read: () => LiveSnapshot
  #timer: NodeJS.Timeout | undefined
  #linesOnScreen = 0
  #previous: Record<Criticality, OutcomeCounts> | undefined

  /** `title` heads the block on a terminal; `name` starts each line otherwise. */
  constructor(title: string, name: string, read: () => LiveSnapshot) {
    this.#title = title
    this.#name = name
    this.#read = read
  }

  start(): void {
    this.#timer = setInterval(() => this.#draw(), VIEW_INTERVAL_MS)
  }

  /** Draws the final state once more and stops; on a terminal the last frame stays on screen. */
  stop(): void {
    clearInterval(this.#timer)
    this.#draw()
  }

  #draw(): void {
    const snapshot = this.#read()
    const lastSecond = this.#previous
    this.#previous = snapshot.counts
    if (!isTty) {
      console.log(this.#line(snapshot, lastSecond))
      return
    }
    const lines = this.#frame(snapshot, lastSecond)
    // Back to the top of the previous frame, then overwrite it line by line.
    let out = this.#linesOnScreen > 0 ? `\x1b[${this.#linesOnScreen}F` : ''
    for (const line of lines) out += `\x1b[2K${line}\n`
    process.stdout.write(out)
    this.#linesOnScreen = lines.length
  }

  #frame(s: LiveSnapshot, lastSecond: Record<Criticality, OutcomeCounts> | undefined): string[] {
    const g = s.gauge
    const phase = s.phase === 'slow' ? red(bold('SLOW')) : green('normal')
    const pool = [
      `used ${bold(`${g.used}/${g.max}`)}`,
      `idle ${g.idle}`,
      `waiting ${g.waiting > 0 ? yellow(String(g.waiting)) : '0'}`,
      `utilisation ${utilisationBar(g.utilisation)}`,
    ].join('  ')
    const governance =
      g.shedding === undefined
        ? dim('no admission control: no shedding, no circuit breaker, no server-side cancel')
        : `shedding ${g.shedding === 'none' ? green('none') : yellow(g.shedding)}   circuit ${g.circuit === 'closed' ? green('closed') : red(String(g.circuit))}   server-side cancels ${g.cancels ?? 0}`
    const header = `${padEnd('', 26)}${padStart('sent', 6)}${padStart('200', 7)}${padStart('503 shed', 10)}${padStart('504 deadl.', 12)}${padStart('gave up', 9)}${padStart('aborted', 9)}${padStart('other', 7)}   last second`
    const rows = CRITICALITIES.map((c) => {
      const n = s.counts[c]
      const recent = lastSecond ? `sent ${n.sent - lastSecond[c].sent}, 200 ×${n.ok - lastSecond[c].ok}` : ''
      return (
        padEnd(`${padEnd(c, 10)}${ROUTES[c].label}`, 26) +
        padStart(String(n.sent), 6) +
        padStart(green(String(n.ok)), 7) +
        padStart(n.shed ? yellow(String(n.shed)) : '0', 10) +
        padStart(n.deadline ? red(String(n.deadline)) : '0', 12) +
        padStart(n.gave_up ? red(String(n.gave_up)) : '0', 9) +
        padStart(String(n.aborted), 9) +
        padStart(n.other ? red(String(n.other)) : '0', 7) +
        `   ${recent}`
      )
    })
    const z = s.zombies
    const zombies =
      `zombie backends ${z.zombies > 0 ? magenta(bold(String(z.zombies))) : green('0')} now, peak ${z.peak}, ` +
      `${z.backendSeconds.toFixed(1)} backend-s, ${z.queries} queries ${dim('(active in pg_stat_activity, client already gone)')}`
    return [
      `${bold(this.#title)}   ${cyan(`${(s.elapsedMs / 1000).toFixed(0)} s / ${(s.durationMs / 1000).toFixed(0)} s`)}${s.sending ? '' : dim('  all sent, awaiting the last answers')}`,
      `phase ${phase}: ${describeSlowness(s.phase)}`,
      '',
      `pool      ${pool}`,
      `          ${governance}`,
      '',
      dim(header),
      ...rows,
      '',
      zombies,
      `backends running demo queries ${z.active}, requests in flight ${s.inFlight}`,
    ]
  }

  #line(s: LiveSnapshot, lastSecond: Record<Criticality, OutcomeCounts> | undefined): string {
    const g = s.gauge
    const governance = g.shedding === undefined ? '' : ` shedding ${g.shedding} circuit ${g.circuit} cancels ${g.cancels ?? 0}`
    const outcomes = CRITICALITIES.map((c) => {
      const n = s.counts[c]
      const recent = lastSecond ? ` [1 s: ${n.sent - lastSecond[c].sent} sent, ${n.ok - lastSecond[c].ok} ok]` : ''
      const other = n.other > 0 ? ` other:${n.other}` : ''
      return `${c}${recent} 200:${n.ok} 503:${n.shed} 504:${n.deadline} gave-up:${n.gave_up} aborted:${n.aborted}${other}`
    }).join(' | ')
    const z = s.zombies
    return (
      `[${this.#name} ${padStart((s.elapsedMs / 1000).toFixed(0), 2)}s ${padEnd(s.sending ? s.phase : 'ending', 6)}] ` +
      `pool ${g.used}/${g.max} idle ${g.idle} waiting ${g.waiting} util ${g.utilisation.toFixed(2)}${governance} | ${outcomes} | ` +
      `zombies ${z.zombies} (peak ${z.peak}, ${z.backendSeconds.toFixed(1)} backend-s)`
    )
  }
}

function utilisationBar(utilisation: number): string {
  const cells = 10
  const filled = Math.min(cells, Math.round(utilisation * cells))
  const bar = '█'.repeat(filled) + '·'.repeat(cells - filled)
  const text = `${utilisation.toFixed(2)} ${bar}`
  return utilisation >= 1 ? red(text) : utilisation >= 0.8 ? yellow(text) : green(text)
}
