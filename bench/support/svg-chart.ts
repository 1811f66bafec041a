/** A hand-written SVG line chart (no dependency): stacked panels sharing the x axis. */
import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface Series {
  readonly label: string
  readonly color: string
  /** SVG stroke-dasharray, e.g. '6 3'. */
  readonly dash?: string
  /** [x, y]; y null leaves a gap. */
  readonly points: readonly (readonly [number, number | null])[]
}

export interface Panel {
  readonly title: string
  readonly series: readonly Series[]
}

export interface ChartOptions {
  readonly title: string
  readonly subtitle?: string
  readonly xLabel: string
  readonly yLabel: string
  readonly xMax: number
  readonly yMax: number
  readonly xTickEvery: number
  readonly yTicks: readonly number[]
  /** Formats a y tick. */
  readonly yFormat?: (y: number) => string
  /** Vertical markers, e.g. a deploy. */
  readonly markers?: readonly { readonly x: number; readonly label: string }[]
  readonly width?: number
  readonly panelHeight?: number
}

const escape = (text: string): string => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
const n = (value: number): string => (Math.round(value * 10) / 10).toString()

export function lineChartSvg(panels: readonly Panel[], options: ChartOptions): string {
  const width = options.width ?? 960
  const panelHeight = options.panelHeight ?? 300
  const left = 64
  const right = 24
  const top = options.subtitle ? 74 : 56
  const legendHeight = 22 * Math.ceil((panels[0]?.series.length ?? 0) / 2) + 12
  const gap = 54
  const plotWidth = width - left - right
  const plotHeight = panelHeight - 30
  const height = top + legendHeight + panels.length * (panelHeight + gap) + 20
  const yFormat = options.yFormat ?? ((y: number) => String(y))
  const out: string[] = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">`)
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`)
  out.push(`<text x="${left}" y="28" font-size="17" font-weight="bold">${escape(options.title)}</text>`)
  if (options.subtitle) out.push(`<text x="${left}" y="50" font-size="12" fill="#444">${escape(options.subtitle)}</text>`)

  // Legend: the series of the first panel (every panel has the same setups).
  const legendTop = top
  ;(panels[0]?.series ?? []).forEach((s, i) => {
    const x = left + (i % 2) * (plotWidth / 2)
    const y = legendTop + 22 * Math.floor(i / 2)
    out.push(`<line x1="${x}" y1="${y}" x2="${x + 34}" y2="${y}" stroke="${s.color}" stroke-width="3"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`)
    out.push(`<text x="${x + 42}" y="${y + 4}">${escape(s.label)}</text>`)
  })

  panels.forEach((panel, p) => {
    const y0 = top + legendHeight + p * (panelHeight + gap) + 20
    const sx = (x: number): number => left + (x / options.xMax) * plotWidth
    const sy = (y: number): number => y0 + plotHeight - (Math.min(Math.max(y, 0), options.yMax) / options.yMax) * plotHeight
    out.push(`<text x="${left}" y="${y0 - 8}" font-size="14" font-weight="bold">${escape(panel.title)}</text>`)
    out.push(`<rect x="${left}" y="${y0}" width="${plotWidth}" height="${plotHeight}" fill="none" stroke="#888"/>`)
    for (const tick of options.yTicks) {
      const y = sy(tick)
      out.push(`<line x1="${left}" y1="${n(y)}" x2="${left + plotWidth}" y2="${n(y)}" stroke="#e4e4e4"/>`)
      out.push(`<text x="${left - 6}" y="${n(y + 4)}" text-anchor="end" fill="#444">${escape(yFormat(tick))}</text>`)
    }
    for (let x = 0; x <= options.xMax + 1e-9; x += options.xTickEvery) {
      const px = sx(x)
      out.push(`<line x1="${n(px)}" y1="${y0 + plotHeight}" x2="${n(px)}" y2="${y0 + plotHeight + 4}" stroke="#888"/>`)
      out.push(`<text x="${n(px)}" y="${y0 + plotHeight + 17}" text-anchor="middle" fill="#444">${n(x)}</text>`)
    }
    out.push(`<text x="${left + plotWidth / 2}" y="${y0 + plotHeight + 34}" text-anchor="middle" fill="#444">${escape(options.xLabel)}</text>`)
    out.push(
      `<text x="${left - 46}" y="${y0 + plotHeight / 2}" text-anchor="middle" fill="#444" transform="rotate(-90 ${left - 46} ${y0 + plotHeight / 2})">${escape(options.yLabel)}</text>`,
    )
    for (const marker of options.markers ?? []) {
      const px = sx(marker.x)
      out.push(`<line x1="${n(px)}" y1="${y0}" x2="${n(px)}" y2="${y0 + plotHeight}" stroke="#555" stroke-dasharray="4 4"/>`)
      out.push(`<text x="${n(px + 6)}" y="${y0 + 14}" fill="#555">${escape(marker.label)}</text>`)
    }
    // The first series is drawn last, on top of the others.
    for (const s of [...panel.series].reverse()) {
      // One polyline per run of non-null points.
      let run: string[] = []
      const flush = (): void => {
        if (run.length > 1) {
          out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2.2" stroke-linejoin="round"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''} points="${run.join(' ')}"/>`)
        } else if (run.length === 1) {
          const [x, y] = (run[0] as string).split(',')
          out.push(`<circle cx="${x}" cy="${y}" r="2.5" fill="${s.color}"/>`)
        }
        run = []
      }
      for (const [x, y] of s.points) {
        if (y === null || !Number.isFinite(y)) flush()
        else run.push(`${n(sx(x))},${n(sy(y))}`)
      }
      flush()
    }
  })
  out.push('</svg>')
  return `${out.join('\n')}\n`
}

const RESULTS_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'results')

/** Writes bench/results/<file> (git-ignored, next to writeResults' JSON) and returns its path. */
export function writeResultFile(file: string, content: string): string {
  mkdirSync(RESULTS_DIR, { recursive: true })
  const path = join(RESULTS_DIR, file)
  writeFileSync(path, content)
  return path
}
