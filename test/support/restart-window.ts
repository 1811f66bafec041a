/** A server that can be stopped and started again (an embedded one, or a stand-in such as a fault proxy). */
export interface Restartable {
  stop(): Promise<void>
  start(): Promise<void>
}

/**
 * The restart: up for `upBeforeMs`, stopped, down for `downMs`, started, up
 * again for `upAfterMs`. Requests go out in an open loop at `ratePerS` (on
 * schedule, whatever happened to the ones before) until it is over.
 */
export interface RestartPlan {
  readonly ratePerS: number
  readonly upBeforeMs: number
  readonly downMs: number
  readonly upAfterMs: number
  /** A bound on the loop, should the restart hang. Default 10 000. */
  readonly maxRequests?: number
}

/** Each request's outcome, and when the server began to stop and was ready again (performance.now()). */
export interface RestartRun<T> {
  readonly outcomes: T[]
  readonly stopping: number
  readonly ready: number
}

/**
 * Drives `send` in an open loop through a restart of `server` and returns
 * every outcome once all have settled. `send` gets the instant the request
 * went out and must settle into an outcome rather than reject.
 *
 * @example
 * ```ts
 * const { outcomes, stopping, ready } = await requestsThroughRestart(server, { ratePerS: 200, upBeforeMs: 500, downMs: 1_000, upAfterMs: 1_500 }, (sentAt) =>
 *   query().then(() => ({ sentAt, ok: true }), () => ({ sentAt, ok: false })),
 * )
 * ```
 */
export async function requestsThroughRestart<T>(server: Restartable, plan: RestartPlan, send: (sentAt: number) => Promise<T>): Promise<RestartRun<T>> {
  const t0 = performance.now()
  let stopping = Infinity
  let ready = Infinity
  let done = false
  const restart = (async () => {
    try {
      await sleep(plan.upBeforeMs)
      stopping = performance.now()
      await server.stop()
      await sleep(plan.downMs)
      await server.start()
      ready = performance.now()
      await sleep(plan.upAfterMs)
    } finally {
      done = true
    }
  })()
  const requests: Promise<T>[] = []
  const maxRequests = plan.maxRequests ?? 10_000
  for (let i = 0; !done && i < maxRequests; i++) {
    const wait = t0 + (i * 1_000) / plan.ratePerS - performance.now()
    if (wait > 0) await sleep(wait)
    requests.push(send(performance.now()))
  }
  await restart
  return { outcomes: await Promise.all(requests), stopping, ready }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
