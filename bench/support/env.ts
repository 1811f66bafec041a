/** Reads the bench knobs from the environment, with defaults that keep each script under ~90 s. */

export function envInt(name: string, fallback: number, min = 1): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return fallback
  const value = Number(raw)
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} must be an integer >= ${min}; got ${JSON.stringify(raw)}`)
  return value
}

/** A comma-separated list of integers >= `min`, e.g. BENCH_CONCURRENCIES=1,16. */
export function envIntList(name: string, fallback: readonly number[], min = 1): number[] {
  const raw = process.env[name]
  if (raw === undefined || raw.trim() === '') return [...fallback]
  return raw.split(',').map((part) => {
    const value = Number(part.trim())
    if (!Number.isInteger(value) || value < min) throw new Error(`${name}: bad value ${JSON.stringify(part)} (integers >= ${min}, comma-separated)`)
    return value
  })
}

export function envFlag(name: string): boolean {
  const raw = process.env[name]
  return raw === '1' || raw === 'true' || raw === 'yes'
}

/** The knobs a script read, for the results file. */
export function knobs(names: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {}
  for (const name of names) {
    const value = process.env[name]
    if (value !== undefined) out[name] = value
  }
  return out
}
