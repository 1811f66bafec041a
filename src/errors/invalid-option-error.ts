import { GovernorError } from './governor-error.js'

/**
 * An option or argument was malformed. Thrown synchronously, before anything
 * changed: nothing was queued, sent or reconfigured.
 *
 * @example
 * ```ts
 * withQueryContext({ timeoutMs: -5 }, fn) // throws InvalidOptionError: timeoutMs must be ...
 * ```
 */
export class InvalidOptionError extends GovernorError {
  /** The option's path, for example `policies.report.timeoutMs`. */
  readonly option: string

  constructor(option: string, message: string) {
    super('INVALID_OPTION', `invalid option ${option}: ${message}`)
    this.option = option
  }
}
