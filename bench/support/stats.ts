/** Small statistics for latency samples (milliseconds). */

export interface Summary {
  readonly n: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly mean: number
  readonly min: number
  readonly max: number
}

/** Nearest-rank percentile of an ascending array; NaN when empty. */
export function percentileSorted(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil(p * sorted.length)))
  return sorted[rank - 1] as number
}

export function sortedCopy(values: ArrayLike<number>): Float64Array {
  return Float64Array.from(values as ArrayLike<number>).sort()
}

export function summarize(values: ArrayLike<number>): Summary {
  const sorted = sortedCopy(values)
  let sum = 0
  for (const v of sorted) sum += v
  return {
    n: sorted.length,
    p50: percentileSorted(sorted, 0.5),
    p90: percentileSorted(sorted, 0.9),
    p99: percentileSorted(sorted, 0.99),
    mean: sorted.length ? sum / sorted.length : NaN,
    min: sorted.length ? (sorted[0] as number) : NaN,
    max: sorted.length ? (sorted[sorted.length - 1] as number) : NaN,
  }
}

/** Median (mean of the two middle values for an even count). */
export function median(values: readonly number[]): number {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

/** Linearly interpolated quantile of an ascending array (q in [0, 1]); NaN when empty. */
export function quantile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN
  const position = (sorted.length - 1) * q
  const below = Math.floor(position)
  const above = Math.min(sorted.length - 1, below + 1)
  return (sorted[below] as number) + ((sorted[above] as number) - (sorted[below] as number)) * (position - below)
}
