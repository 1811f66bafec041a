/**
 * Where a session stands between a cancel and its next use:
 * - `ready`: nothing draining, reusable;
 * - `settling`: a cancelled statement, its cancel (or a cursor close) is
 *   still draining; nothing else may run until it ends, and `discardReason`
 *   says whether the session may be reused after;
 * - `discarded`: never reused; destroyed when released.
 */
export type SettlerState =
  | { readonly kind: 'ready' }
  | { readonly kind: 'settling'; readonly settled: Promise<void>; readonly discardReason: string | undefined }
  | { readonly kind: 'discarded'; readonly reason: string }

/** How long a cancelled statement may take to end before its session is destroyed instead. */
export const SETTLE_TIMEOUT_MS = 5_000

/**
 * Holds a session until every cancel sent for it and the statement it
 * cancelled have ended, so that no cancel can ever meet the next statement
 * (invariant 2). Steps queue in order; each is bounded, and a step that fails
 * or overruns marks the session for destruction instead of reuse.
 *
 * @example
 * ```ts
 * const settler = new CancelSettler()
 * void settler.after(() => Promise.allSettled([statementEnded, cancelSent]))
 * await settler.settled() // before the next statement or the release
 * if (settler.state.kind === 'discarded') destroy()
 * ```
 */
export class CancelSettler {
  readonly #timeoutMs: number
  #state: SettlerState = READY

  constructor(timeoutMs: number = SETTLE_TIMEOUT_MS) {
    this.#timeoutMs = timeoutMs
  }

  get state(): SettlerState {
    return this.#state
  }

  /** Why the session must not be reused, if it must not. */
  get discardReason(): string | undefined {
    const state = this.#state
    return state.kind === 'discarded' ? state.reason : state.kind === 'settling' ? state.discardReason : undefined
  }

  /** Resolves when nothing drains any more; undefined when nothing drains now (the usual case: no promise). */
  settled(): Promise<void> | undefined {
    return this.#state.kind === 'settling' ? this.#state.settled : undefined
  }

  /** Marks the session never to be reused. True the first time. */
  discard(reason: string): boolean {
    const state = this.#state
    if (state.kind === 'ready') {
      this.#state = { kind: 'discarded', reason }
      return true
    }
    if (state.kind === 'settling' && state.discardReason === undefined) {
      this.#state = { kind: 'settling', settled: state.settled, discardReason: reason }
      return true
    }
    return false
  }

  /**
   * Queues `step` after whatever drains now; the session waits for it before
   * it runs anything else or is released. Resolves when the step has ended,
   * or after `timeoutMs` (the settler's own limit by default), past which the
   * session is marked for destruction.
   */
  after(step: () => Promise<unknown>, timeoutMs: number = this.#timeoutMs): Promise<void> {
    const previous = this.settled() ?? Promise.resolve()
    const settled: Promise<void> = previous
      .then(() => this.#bounded(step(), timeoutMs))
      .then(
        () => {},
        (error: unknown) => void this.discard(`cleanup failed: ${String(error)}`),
      )
      .then(() => {
        const state = this.#state
        if (state.kind === 'settling' && state.settled === settled) {
          this.#state = state.discardReason === undefined ? READY : { kind: 'discarded', reason: state.discardReason }
        }
      })
    this.#state = { kind: 'settling', settled, discardReason: this.discardReason }
    return settled
  }

  /**
   * A statement that does not end even after its cancel (a hung server, a lost
   * packet) must not hold the session forever: past the limit it is destroyed
   * instead of reused, which frees its slot.
   */
  #bounded(work: Promise<unknown>, timeoutMs: number): Promise<unknown> {
    let timer: NodeJS.Timeout | undefined
    const limit = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.discard(`did not settle within ${timeoutMs} ms`)
        resolve()
      }, timeoutMs)
    })
    return Promise.race([work, limit]).finally(() => clearTimeout(timer))
  }
}

const READY: SettlerState = Object.freeze({ kind: 'ready' })
