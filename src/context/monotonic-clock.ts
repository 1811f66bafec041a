import { performance } from 'node:perf_hooks'

/**
 * Milliseconds on the monotonic clock. Deadlines are kept on it so that a wall
 * clock step (NTP, a VM resume) neither extends nor cuts a budget.
 */
export function now(): number {
  return performance.now()
}

/** Converts a wall-clock instant (a Date or epoch milliseconds) to the monotonic clock. */
export function monotonicFromWallClock(epochMs: number): number {
  return performance.now() + (epochMs - Date.now())
}
