import { GovernorError } from './governor-error.js'
import type { QueryPhase } from './query-phase.js'

/**
 * The query's time budget ran out. `phase` and the timings say where the time
 * went; when the query was running, it was cancelled on the server and `cause`
 * holds the server's error if it answered before the deadline was reported.
 *
 * @example
 * ```ts
 * await withQueryContext({ timeoutMs: 200 }, async () => {
 *   try {
 *     await sql`select pg_sleep(1)`.execute(db)
 *   } catch (error) {
 *     if (error instanceof DeadlineExceededError) {
 *       console.log(error.phase, error.waitedMs, error.ranMs) // 'running', 0.4, 200.1
 *     }
 *   }
 * })
 * ```
 */
export class DeadlineExceededError extends GovernorError {
  readonly phase: QueryPhase
  /** The budget the query started with, in milliseconds. */
  readonly budgetMs: number
  /** Time spent waiting for a connection, in milliseconds. */
  readonly waitedMs: number
  /** Time spent running on the server, in milliseconds. */
  readonly ranMs: number

  constructor(details: {
    readonly phase: QueryPhase
    readonly budgetMs: number
    readonly waitedMs: number
    readonly ranMs: number
    readonly cause?: unknown
  }) {
    super(
      'DEADLINE_EXCEEDED',
      `query deadline exceeded ${describePhase(details.phase)} (budget ${round(details.budgetMs)} ms: waited ${round(details.waitedMs)} ms, ran ${round(details.ranMs)} ms)`,
      details.cause === undefined ? undefined : { cause: details.cause },
    )
    this.phase = details.phase
    this.budgetMs = details.budgetMs
    this.waitedMs = details.waitedMs
    this.ranMs = details.ranMs
  }
}

export function describePhase(phase: QueryPhase): string {
  switch (phase) {
    case 'before_start':
      return 'before it started'
    case 'waiting':
      return 'while waiting for a connection'
    case 'running':
      return 'while running on the server'
  }
}

export function round(ms: number): number {
  return Math.round(ms * 10) / 10
}
