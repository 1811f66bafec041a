/** Printing: aligned tables and verdicts. */

export type Cell = string | number

export function fmt(value: number, digits = 2): string {
  if (!Number.isFinite(value)) return String(value)
  return value.toFixed(digits)
}

export function fmtInt(value: number): string {
  if (!Number.isFinite(value)) return String(value)
  return Math.round(value).toLocaleString('en-US')
}

/** Prints a table; numbers are right-aligned, text left-aligned. */
export function printTable(title: string, headers: readonly string[], rows: readonly (readonly Cell[])[]): void {
  const text = rows.map((row) => row.map((cell) => String(cell)))
  const widths = headers.map((h, i) => Math.max(h.length, ...text.map((row) => (row[i] ?? '').length)))
  const numeric = headers.map((_, i) => rows.every((row) => typeof row[i] === 'number' || /^[-+]?[\d,.]+(x| ms|%)?$/.test(String(row[i] ?? ''))))
  const line = (cells: readonly string[]): string =>
    cells.map((cell, i) => (numeric[i] ? cell.padStart(widths[i] ?? 0) : cell.padEnd(widths[i] ?? 0))).join('  ').trimEnd()
  console.log(`\n${title}`)
  console.log(line(headers))
  console.log(widths.map((w) => '-'.repeat(w)).join('  '))
  for (const row of text) console.log(line(row))
}

export interface Check {
  readonly claim: string
  readonly value: number
  readonly comparator: '>=' | '<='
  readonly target: number
  readonly unit: string
  readonly pass: boolean
}

export function check(claim: string, value: number, comparator: '>=' | '<=', target: number, unit = ''): Check {
  const pass = Number.isFinite(value) && (comparator === '>=' ? value >= target : value <= target)
  return { claim, value, comparator, target, unit, pass }
}

export function printChecks(title: string, checks: readonly Check[]): void {
  printTable(
    title,
    ['claim', 'measured', 'target', 'verdict'],
    checks.map((c) => [c.claim, `${fmt(c.value, c.unit === 'x' || c.unit === '' ? 3 : 2)}${c.unit === 'x' ? 'x' : c.unit ? ` ${c.unit}` : ''}`, `${c.comparator} ${c.target}${c.unit === 'x' ? 'x' : c.unit ? ` ${c.unit}` : ''}`, c.pass ? 'PASS' : 'MISS']),
  )
}
