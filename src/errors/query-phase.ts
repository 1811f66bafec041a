/**
 * Where a query was when it was stopped: waiting for a connection (`waiting`),
 * running on the server (`running`), or never started because its budget was
 * already spent or its signal already aborted (`before_start`).
 *
 * @example
 * ```ts
 * if (error instanceof DeadlineExceededError && error.phase === 'waiting') console.log('the pool was the bottleneck')
 * ```
 */
export type QueryPhase = 'before_start' | 'waiting' | 'running'
