/**
 * Small text helpers: numbers, percentages, padding, percentiles, and ANSI
 * colours (only on a terminal, and never with NO_COLOR set).
 */

export const isTty = process.stdout.isTTY === true
const colours = isTty && !process.env['NO_COLOR']

function paint(code: string): (text: string) => string {
  return (text) => (colours ? `\x1b[${code}m${text}\x1b[0m` : text)
}

export const bold = paint('1')
export const dim = paint('2')
export const red = paint('31')
export const green = paint('32')
export const yellow = paint('33')
export const magenta = paint('35')
export const cyan = paint('36')

/** Visible width of a string that may hold ANSI colour codes. */
export function width(text: string): number {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, '').length
}

export function padEnd(text: string, size: number): string {
  return text + ' '.repeat(Math.max(0, size - width(text)))
}

export function padStart(text: string, size: number): string {
  return ' '.repeat(Math.max(0, size - width(text))) + text
}

export function ms(value: number): string {
  if (!Number.isFinite(value)) return '-'
  return value >= 10_000 ? `${(value / 1000).toFixed(1)} s` : `${Math.round(value)} ms`
}

export function pct(part: number, whole: number): string {
  return whole === 0 || !Number.isFinite(part) ? '-' : `${((100 * part) / whole).toFixed(1)} %`
}

export function heading(title: string): void {
  console.log(`\n${bold(`── ${title} ${'─'.repeat(Math.max(0, 74 - title.length))}`)}`)
}

/** The p-th percentile (0..100) by nearest rank; NaN for no values. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[rank] as number
}
