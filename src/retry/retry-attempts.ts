/**
 * The attempts a failed query was given, as marked on its error by the
 * retry paths (absent: one attempt, no retry was considered).
 *
 * @example
 * ```ts
 * try {
 *   await db.selectFrom('person').selectAll().execute()
 * } catch (error) {
 *   console.log(attemptsOf(error)) // 3 after two retries
 * }
 * ```
 */
export function attemptsOf(error: unknown): number {
  const attempts = (error as { attempts?: unknown } | null)?.attempts
  return typeof attempts === 'number' ? attempts : 1
}

/**
 * Marks `error` with the attempts made (a non-enumerable `attempts`, so that
 * loggers that print every field of pg's errors do not change) and returns it.
 * Errors that cannot take a property (frozen, or not objects) are returned as they are.
 *
 * @example
 * ```ts
 * throw markAttempts(error, 3)
 * ```
 */
export function markAttempts<E>(error: E, attempts: number): E {
  if (typeof error === 'object' && error !== null && Object.isExtensible(error)) {
    Object.defineProperty(error, 'attempts', { value: attempts, configurable: true, writable: true, enumerable: false })
  }
  return error
}
