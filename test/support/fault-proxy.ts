import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net'

/** How the proxy treats connections opened from now on. */
export type ProxyMode = 'forward' | 'blackhole'

/** toxiproxy's names for the two directions: toward the server, toward the client. */
export type Direction = 'upstream' | 'downstream'

/** Faults on one direction, in toxiproxy's vocabulary. */
export interface DirectionToxics {
  /** Added delay of every chunk, ms (toxiproxy `latency`). */
  latencyMs?: number
  /** Uniform ± jitter on the delay, ms; chunks stay in order, as in toxiproxy. */
  jitterMs?: number
  /** Bytes per second at most (toxiproxy `bandwidth`, in bytes rather than KB). */
  bytesPerSecond?: number
}

/**
 * A TCP proxy on 127.0.0.1 in front of a test server, for faults the kernel
 * cannot inject here (toxiproxy is not installable on our machines):
 * - `toxics(direction, …)`: latency with jitter and bandwidth, per direction;
 * - `hold()` / `heal()`: a partition that heals; nothing is delivered either
 *   way on any connection, old or new, and on heal everything held is
 *   delivered in order (a late packet is a late packet, not a lost one);
 * - `timeout(ms)`: toxiproxy's `timeout`: data is dropped and every
 *   connection is closed after `ms`, those opened later too (until `clear()`);
 * - `reset()`: every open connection is reset (RST); `refuseFor(ms)` resets
 *   new ones at accept for a while;
 * - `mode = 'blackhole'`: new connections are accepted and hear nothing while
 *   old ones keep working (a server that stopped accepting).
 * Only ever listens on and connects to 127.0.0.1-style local targets.
 */
export interface FaultProxy {
  /** `url` with host and port replaced by the proxy's. */
  readonly url: string
  readonly port: number
  mode: ProxyMode
  /** Sets (merges) the toxics of one direction; `{}` values of undefined clear them. */
  toxics(direction: Direction, toxics: DirectionToxics): void
  hold(): void
  heal(): void
  timeout(ms: number): void
  reset(): void
  refuseFor(ms: number): void
  /** Removes every toxic, heals, and forwards again (connections the timeout toxic took are still closed when due). */
  clear(): void
  /** Connections currently open through the proxy. */
  readonly connections: number
  /** Connections accepted since the start, refused and blackholed ones included: the attempts that reached the server's address. */
  readonly accepted: number
  close(): Promise<void>
}

interface Chunk {
  readonly data: Buffer
  /** When the latency (with this chunk's jitter) lets it go. */
  readonly dueAt: number
}

/** One direction of one connection: a queue released by the clock, the hold and the bandwidth. */
class Link {
  readonly #queue: Chunk[] = []
  readonly #to: Socket
  readonly #proxy: ProxyState
  readonly #direction: Direction
  #timer: NodeJS.Timeout | undefined
  /** No chunk leaves before this (keeps the order under jitter, and paces the bandwidth). */
  #nextAt = 0

  constructor(to: Socket, proxy: ProxyState, direction: Direction) {
    this.#to = to
    this.#proxy = proxy
    this.#direction = direction
  }

  push(data: Buffer): void {
    if (this.#proxy.dropping) return
    this.#queue.push({ data, dueAt: this.#dueFrom(performance.now()) })
    this.pump()
  }

  get pending(): number {
    return this.#queue.length
  }

  #dueFrom(at: number): number {
    const toxics = this.#proxy.toxics[this.#direction]
    const jitter = toxics.jitterMs ? (this.#proxy.random() * 2 - 1) * toxics.jitterMs : 0
    return at + Math.max(0, (toxics.latencyMs ?? 0) + jitter)
  }

  pump(): void {
    if (this.#timer || this.#proxy.held) return
    const toxics = this.#proxy.toxics[this.#direction]
    while (this.#queue.length > 0) {
      const head = this.#queue[0] as Chunk
      const dueAt = Math.max(this.#nextAt, head.dueAt)
      const wait = dueAt - performance.now()
      if (wait > 0.5) {
        this.#nextAt = dueAt
        this.#timer = setTimeout(() => {
          this.#timer = undefined
          this.pump()
        }, wait)
        return
      }
      this.#queue.shift()
      if (!this.#to.destroyed) this.#to.write(head.data)
      this.#nextAt = toxics.bytesPerSecond ? performance.now() + (head.data.length * 1000) / toxics.bytesPerSecond : 0
    }
  }

  /** A heal: chunks held count from now, not from when they arrived (the network delivers them now). */
  release(): void {
    const at = performance.now()
    for (let i = 0; i < this.#queue.length; i++) this.#queue[i] = { data: (this.#queue[i] as Chunk).data, dueAt: this.#dueFrom(at) }
    this.#nextAt = 0
    this.stop()
    this.pump()
  }

  drop(): void {
    this.#queue.length = 0
  }

  stop(): void {
    clearTimeout(this.#timer)
    this.#timer = undefined
  }
}

interface ProxyState {
  held: boolean
  dropping: boolean
  /** The `timeout` toxic's delay before a connection is closed, while it is on. */
  closeAfterMs: number | undefined
  readonly toxics: Record<Direction, DirectionToxics>
  readonly random: () => number
}

export async function startFaultProxy(url: string, options: { readonly random?: () => number } = {}): Promise<FaultProxy> {
  const target = new URL(url)
  const state: ProxyState = { held: false, dropping: false, closeAfterMs: undefined, toxics: { upstream: {}, downstream: {} }, random: options.random ?? Math.random }
  const pairs = new Set<{ readonly client: Socket; readonly upstream: Socket | undefined; readonly links: Link[] }>()
  const timers = new Set<NodeJS.Timeout>()
  let mode: ProxyMode = 'forward'
  let refuseUntil = 0
  let accepted = 0

  const server: Server = createServer((client) => {
    accepted++
    client.on('error', () => client.destroy())
    if (performance.now() < refuseUntil) {
      client.resetAndDestroy()
      return
    }
    if (mode === 'blackhole') {
      const pair = { client, upstream: undefined, links: [] }
      pairs.add(pair)
      client.on('close', () => pairs.delete(pair))
      client.resume()
      return
    }
    const upstream = connect(Number(target.port || 5432), target.hostname)
    const up = new Link(upstream, state, 'upstream')
    const down = new Link(client, state, 'downstream')
    const pair = { client, upstream, links: [up, down] }
    pairs.add(pair)
    upstream.on('error', () => upstream.destroy())
    client.on('data', (data: Buffer) => up.push(data))
    upstream.on('data', (data: Buffer) => down.push(data))
    // A close travels like data would: not through a partition (it is held until the heal, then delivered).
    // What was sent before the close is delivered first (within 2 s of the heal).
    const closeLater = (socket: Socket, link: Link): void => {
      let flushUntil = Infinity
      const finish = (): void => {
        if (state.held) flushUntil = Infinity
        else if (flushUntil === Infinity) flushUntil = performance.now() + 2_000
        if (state.held || (link.pending > 0 && !state.dropping && performance.now() < flushUntil)) {
          link.pump()
          setTimeout(finish, 5).unref()
          return
        }
        link.stop()
        socket.destroy()
      }
      finish()
    }
    client.on('close', () => {
      pairs.delete(pair)
      closeLater(upstream, up)
    })
    upstream.on('close', () => closeLater(client, down))
    // As in toxiproxy, the timeout toxic applies to connections opened while it is on: dropped, then closed.
    if (state.closeAfterMs !== undefined) closeAfter(state.closeAfterMs, [pair])
  })
  const closeAfter = (ms: number, closing: Iterable<{ readonly client: Socket; readonly upstream: Socket | undefined }>): void => {
    const doomed = [...closing]
    const timer = setTimeout(() => {
      timers.delete(timer)
      for (const pair of doomed) {
        pair.client.destroy()
        pair.upstream?.destroy()
      }
    }, ms)
    timers.add(timer)
  }
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  const proxied = new URL(url)
  proxied.hostname = '127.0.0.1'
  proxied.port = String(port)

  const proxy: FaultProxy = {
    url: proxied.toString(),
    port,
    get mode() {
      return mode
    },
    set mode(value: ProxyMode) {
      mode = value
    },
    get connections() {
      return pairs.size
    },
    get accepted() {
      return accepted
    },
    toxics(direction, toxics) {
      Object.assign(state.toxics[direction], toxics)
    },
    hold() {
      state.held = true
    },
    heal() {
      state.held = false
      for (const pair of pairs) for (const link of pair.links) link.release()
    },
    timeout(ms) {
      state.dropping = true
      state.closeAfterMs = ms
      for (const pair of pairs) for (const link of pair.links) link.drop()
      closeAfter(ms, pairs)
    },
    reset() {
      for (const pair of pairs) {
        for (const link of pair.links) link.stop()
        if (!pair.client.destroyed) pair.client.resetAndDestroy()
        pair.upstream?.destroy()
      }
    },
    refuseFor(ms) {
      refuseUntil = performance.now() + ms
    },
    clear() {
      state.toxics.upstream = {}
      state.toxics.downstream = {}
      state.dropping = false
      state.closeAfterMs = undefined
      refuseUntil = 0
      mode = 'forward'
      // Connections the timeout toxic already dropped data of are still closed when due: what they sent is lost for good.
      proxy.heal()
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const timer of timers) clearTimeout(timer)
        state.held = false
        for (const pair of pairs) {
          for (const link of pair.links) link.stop()
          pair.client.destroy()
          pair.upstream?.destroy()
        }
        server.close(() => resolve())
      }),
  }
  return proxy
}
