/**
 * `promise`, or a rejection with `timeoutError()` after `ms` milliseconds,
 * whichever comes first. The timer is cleared either way; a late settlement of
 * `promise` is ignored. Internal: the canceller, the test server and the
 * overload bench share it.
 */
export function withTimeout<T>(promise: Promise<T>, ms: number, timeoutError: () => Error = () => new Error(`timed out after ${ms} ms`)): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(timeoutError()), ms)
    promise.then(
      (value) => {
        clearTimeout(timer)
        resolve(value)
      },
      (error: unknown) => {
        clearTimeout(timer)
        reject(error instanceof Error ? error : new Error(String(error)))
      },
    )
  })
}
