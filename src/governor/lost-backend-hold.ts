import { now } from '../context/monotonic-clock.js'
import type { LostBackend } from '../session/unanswered-statement.js'

/** Past the statement_timeout, how long a held permit waits more: the server stops the statement, then the backend has to notice its client is gone. */
export const LOST_BACKEND_MARGIN_MS = 500

/** The longest a permit is held for a lost backend, whatever its statement_timeout: a permit is never held for good. */
export const LOST_BACKEND_MAX_HOLD_MS = 30_000

/** The first look again after a check that freed nothing (a terminated backend takes a moment to exit); doubles up to {@link MAX_RECHECK_MS}. */
const FIRST_RECHECK_MS = 10
/** The slowest look again, while the server cannot be asked: how late at most a heal is seen by the hold (besides the control query's own limit). */
const MAX_RECHECK_MS = 250

/** One backend to look for at the server: older than `minAgeMs`, or the pid is another backend's now. */
export interface BackendToFind {
  readonly pid: number
  readonly minAgeMs: number
}

/**
 * Terminates those of `backends` that still exist at the server and resolves
 * with their pids (terminated, or not terminable: still there either way);
 * rejects when the server cannot be asked.
 */
export type TerminateLostBackends = (backends: readonly BackendToFind[]) => Promise<ReadonlySet<number>>

/** A held permit: its backend, and when it is given back whatever the server says. */
interface Held {
  readonly backend: LostBackend
  readonly releaseAt: number
}

/**
 * The look at the server, as a tagged union:
 * - `idle`: nothing held, or a look is due at once when something is;
 * - `waiting`: the next look is due when `timer` fires;
 * - `checking`: a look is under way;
 * - `stopped`: the governor closed; every permit was given back.
 */
type LookState =
  | { readonly kind: 'idle' }
  | { readonly kind: 'waiting'; readonly timer: NodeJS.Timeout }
  | { readonly kind: 'checking' }
  | { readonly kind: 'stopped' }

export interface LostBackendHoldOptions {
  /** Terminates the lost backends that still run (on the control connection). */
  readonly terminate: TerminateLostBackends
  /** Gives one permit back (to the gate's best waiter). */
  readonly free: () => void
  readonly marginMs?: number
  readonly maxHoldMs?: number
}

/**
 * Holds the permit of a destroyed connection whose backend may still run a
 * statement the server never answered (a connection lost for good: its
 * close reached the server, or will, but the backend notices only when its
 * statement ends), so that its replacement is not opened while it runs:
 * the server then never counts more than the pool's max of ours (plus the
 * control connection). The permit goes back when the server surely no longer
 * runs the backend:
 * - the control connection finds it gone, or terminates it and then finds it
 *   gone (a backend younger than our session is another's, reusing the pid);
 * - or, while the server cannot be asked, once its statement_timeout has
 *   stopped the statement (sent at + the value in force + a margin);
 * - and in any case after {@link LOST_BACKEND_MAX_HOLD_MS}.
 * Lost backends are looked for together, one statement per look: at once,
 * then again after 10 ms, doubling up to 250 ms while some remain.
 *
 * @example
 * ```ts
 * const hold = new LostBackendHold({ terminate: terminateLostBackendsWith(canceller), free: () => gate.release() })
 * const lost = session.lostBackend
 * if (lost) hold.hold(lost)
 * else gate.release()
 * ```
 */
export class LostBackendHold {
  readonly #terminate: TerminateLostBackends
  readonly #free: () => void
  readonly #marginMs: number
  readonly #maxHoldMs: number
  #held: Held[] = []
  #state: LookState = IDLE
  /** Looks in a row that freed nothing: the next one waits longer. */
  #fruitless = 0
  /** The last look was answered: a backend it terminated is looked for again soon, however many looks failed before. */
  #answered = false
  /** Gives back the permits whose time is up, even while a look is under way. */
  #expiry: NodeJS.Timeout | undefined

  constructor(options: LostBackendHoldOptions) {
    this.#terminate = options.terminate
    this.#free = options.free
    this.#marginMs = options.marginMs ?? LOST_BACKEND_MARGIN_MS
    this.#maxHoldMs = options.maxHoldMs ?? LOST_BACKEND_MAX_HOLD_MS
  }

  /** Permits held now. */
  get size(): number {
    return this.#held.length
  }

  /** Holds one permit until `backend` surely no longer runs; a look at the server goes at once. */
  hold(backend: LostBackend): void {
    if (this.#state.kind === 'stopped') {
      this.#free()
      return
    }
    const at = now()
    this.#held.push({ backend, releaseAt: Math.min(backend.stopsBy + this.#marginMs, at + this.#maxHoldMs) })
    this.#armExpiry()
    this.#fruitless = 0
    if (this.#state.kind === 'waiting') clearTimeout(this.#state.timer)
    // A look under way did not include it: the one after it does, without delay (#fruitless is 0).
    if (this.#state.kind !== 'checking') this.#look()
  }

  /** The governor closed: every held permit goes back, no timer is left. */
  stop(): void {
    if (this.#state.kind === 'waiting') clearTimeout(this.#state.timer)
    clearTimeout(this.#expiry)
    this.#expiry = undefined
    this.#state = STOPPED
    const held = this.#held
    this.#held = []
    for (let i = 0; i < held.length; i++) this.#free()
  }

  #look(): void {
    const batch = this.#held.slice()
    const at = now()
    this.#state = CHECKING
    const backends = batch.map(({ backend }) => ({ pid: backend.pid, minAgeMs: Math.max(0, at - backend.bornAt) }))
    this.#terminate(backends).then(
      (running) => {
        const gone = batch.filter(({ backend }) => !running.has(backend.pid))
        this.#fruitless = gone.length > 0 ? 0 : this.#answered ? this.#fruitless + 1 : 1
        this.#answered = true
        this.#release(gone)
      },
      () => {
        this.#fruitless++
        this.#answered = false
      },
    ).finally(() => this.#next())
  }

  #next(): void {
    if (this.#state.kind === 'stopped') return
    if (this.#held.length === 0) {
      this.#state = IDLE
      return
    }
    const delayMs = this.#fruitless === 0 ? 0 : Math.min(MAX_RECHECK_MS, FIRST_RECHECK_MS * 2 ** (this.#fruitless - 1))
    this.#state = { kind: 'waiting', timer: setTimeout(() => this.#look(), delayMs) }
  }

  /** Gives back the permits of `entries` that are still held. */
  #release(entries: readonly Held[]): void {
    if (entries.length === 0) return
    const before = this.#held.length
    this.#held = this.#held.filter((entry) => !entries.includes(entry))
    for (let i = this.#held.length; i < before; i++) this.#free()
    this.#armExpiry()
  }

  #armExpiry(): void {
    clearTimeout(this.#expiry)
    this.#expiry = undefined
    if (this.#held.length === 0) return
    let first = Infinity
    for (const entry of this.#held) first = Math.min(first, entry.releaseAt)
    this.#expiry = setTimeout(() => {
      this.#expiry = undefined
      const at = now()
      this.#release(this.#held.filter((entry) => entry.releaseAt <= at))
      if (this.#held.length === 0 && this.#state.kind === 'waiting') {
        clearTimeout(this.#state.timer)
        this.#state = IDLE
      }
    }, Math.max(0, first - now()))
  }
}

const IDLE: LookState = Object.freeze({ kind: 'idle' })
const CHECKING: LookState = Object.freeze({ kind: 'checking' })
const STOPPED: LookState = Object.freeze({ kind: 'stopped' })

/**
 * The look at the server, on the control connection, in two steps: first a
 * read of which backends still exist; one at least as old as our session is
 * ours (a younger one reuses the pid, so ours is gone). Then, only for those,
 * `pg_terminate_backend` matched on the exact `backend_start` just read: a
 * read that answered within the control timeout is fresh, and a terminate
 * delivered late (behind a partition) can only reach that very backend,
 * never another that took its pid since. Its connection is destroyed: nobody
 * reads its answer, and a transaction rolls back as surely. A backend whose
 * start the control role may not see is taken as still there, untouched: its
 * permit waits for the statement_timeout.
 *
 * @example
 * ```ts
 * const terminate = terminateLostBackendsWith(canceller)
 * const running = await terminate([{ pid: 4242, minAgeMs: 60_000 }])
 * ```
 */
export function terminateLostBackendsWith(control: { query<R>(sql: string, parameters?: readonly unknown[]): Promise<R[]> }): TerminateLostBackends {
  return async (backends) => {
    const found = await control.query<{ pid: number; started: string | null }>(FIND_LOST, [backends.map((b) => b.pid), backends.map((b) => b.minAgeMs)])
    const ours = found.filter((row) => row.started !== null)
    if (ours.length > 0) await control.query(TERMINATE_EXACTLY, [ours.map((row) => row.pid), ours.map((row) => row.started)])
    return new Set(found.map((row) => row.pid))
  }
}

// Durations only (the server's own clock for its age, ours for the session's): no clock offset between the two matters.
const FIND_LOST = `select l.pid, a.backend_start::text as started
from unnest($1::int[], $2::float8[]) as l(pid, min_age_ms)
join pg_stat_activity a on a.pid = l.pid
where a.backend_start is null or a.backend_start <= clock_timestamp() - l.min_age_ms * interval '1 millisecond'`

const TERMINATE_EXACTLY = `select pg_terminate_backend(a.pid)
from unnest($1::int[], $2::text[]) as t(pid, started)
join pg_stat_activity a on a.pid = t.pid and a.backend_start = t.started::timestamptz`
