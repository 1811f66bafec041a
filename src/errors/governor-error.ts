/**
 * The stable codes every pg-governor error carries in `code`.
 *
 * @example
 * ```ts
 * const retryable: GovernorErrorCode[] = ['LOAD_SHED', 'DEADLINE_EXCEEDED']
 * ```
 */
export type GovernorErrorCode =
  | 'DEADLINE_EXCEEDED'
  | 'QUERY_CANCELED'
  | 'LOAD_SHED'
  | 'INVALID_OPTION'
  | 'INVALID_REQUEST_TIMEOUT'
  | 'POOL_CLOSED'

/**
 * Base class of every error pg-governor throws. Match on `code`, which is stable
 * across versions, rather than on the message.
 *
 * @example
 * ```ts
 * try {
 *   await db.selectFrom('person').selectAll().execute()
 * } catch (error) {
 *   if (error instanceof GovernorError && error.code === 'DEADLINE_EXCEEDED') {
 *     reply.status(504)
 *   }
 * }
 * ```
 */
export class GovernorError extends Error {
  readonly code: GovernorErrorCode

  constructor(code: GovernorErrorCode, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
    this.name = new.target.name
  }
}
