import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net'

/** How the proxy treats connections opened from now on. */
export type ProxyMode = 'forward' | 'blackhole'

/**
 * A TCP proxy on 127.0.0.1 in front of a test server, for faults the kernel
 * cannot inject here: in `blackhole` mode new connections are accepted and
 * then hear nothing (a partitioned server), while connections opened before
 * keep working.
 */
export interface FaultProxy {
  /** `url` with host and port replaced by the proxy's. */
  readonly url: string
  mode: ProxyMode
  close(): Promise<void>
}

export async function startFaultProxy(url: string): Promise<FaultProxy> {
  const target = new URL(url)
  const sockets = new Set<Socket>()
  const proxy = { mode: 'forward' as ProxyMode }
  const server: Server = createServer((client) => {
    sockets.add(client)
    client.on('close', () => sockets.delete(client))
    client.on('error', () => client.destroy())
    if (proxy.mode === 'blackhole') return
    const upstream = connect(Number(target.port || 5432), target.hostname)
    sockets.add(upstream)
    upstream.on('close', () => {
      sockets.delete(upstream)
      client.destroy()
    })
    upstream.on('error', () => upstream.destroy())
    client.on('close', () => upstream.destroy())
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  const proxied = new URL(url)
  proxied.hostname = '127.0.0.1'
  proxied.port = String(port)
  return Object.assign(proxy, {
    url: proxied.toString(),
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  })
}
