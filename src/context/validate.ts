import { InvalidOptionError } from '../errors/invalid-option-error.js'

/** Longest budget we accept: setTimeout cannot wait longer than 2^31-1 ms (about 24.8 days). */
export const MAX_TIMEOUT_MS = 2_147_483_647

export function assertTimeoutMs(value: unknown, option: string): asserts value is number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || value > MAX_TIMEOUT_MS) {
    throw new InvalidOptionError(option, `must be a finite number of milliseconds from 0 to ${MAX_TIMEOUT_MS}; got ${describe(value)}`)
  }
}

export function assertDomain(value: unknown, option: string): asserts value is string {
  if (typeof value !== 'string' || value.length === 0 || value.length > 64 || !/^[A-Za-z0-9_.:-]+$/.test(value)) {
    throw new InvalidOptionError(option, `must be 1 to 64 characters of letters, digits, '_', '.', ':' or '-'; got ${describe(value)}`)
  }
}

export function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value)
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value)
  return typeof value
}
