import { createServer, type Server, type Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { sendProtocolCancel } from '../../src/session/protocol-cancel.js'

/** A peer on 127.0.0.1 that records what the client does with its socket, and closes when told. */
async function peer(onSocket: (socket: Socket, received: () => Buffer, clientEnded: () => boolean) => void): Promise<{ server: Server; port: number }> {
  const server = createServer((socket) => {
    const chunks: Buffer[] = []
    let ended = false
    socket.on('data', (chunk) => chunks.push(chunk))
    socket.on('end', () => (ended = true))
    socket.on('error', () => {})
    onSocket(socket, () => Buffer.concat(chunks), () => ended)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (!address || typeof address !== 'object') throw new Error('no port')
  return { server, port: address.port }
}

const servers: Server[] = []
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))))
})

describe('sendProtocolCancel', () => {
  it('writes the 16-byte CancelRequest, keeps its socket open, and resolves only once the peer has closed it (as libpq does)', async () => {
    let clientEndedFirst: boolean | undefined
    let message: Buffer | undefined
    const { server, port } = await peer((socket, received, clientEnded) => {
      // A peer slow to close: PgBouncer 1.18 dies when the client closes first (PgBouncer #801).
      setTimeout(() => {
        clientEndedFirst = clientEnded()
        message = received()
        socket.end()
      }, 150)
    })
    servers.push(server)
    const started = performance.now()
    await sendProtocolCancel({ host: '127.0.0.1', port }, 1234, -5, 2_000)
    expect(performance.now() - started).toBeGreaterThanOrEqual(140)
    expect(clientEndedFirst).toBe(false)
    expect(message?.length).toBe(16)
    expect(message?.readInt32BE(0)).toBe(16)
    expect(message?.readInt32BE(4)).toBe(80877102)
    expect(message?.readInt32BE(8)).toBe(1234)
    expect(message?.readInt32BE(12)).toBe(-5)
  })

  it('gives up after its timeout when the peer never closes, and destroys the socket', async () => {
    let closedByClient = false
    const { server, port } = await peer((socket) => socket.on('close', () => (closedByClient = true)))
    servers.push(server)
    await expect(sendProtocolCancel({ host: '127.0.0.1', port }, 1, 2, 100)).rejects.toThrow(/did not close the socket within 100 ms/)
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(closedByClient).toBe(true)
  })

  it('rejects when nothing listens', async () => {
    const { server, port } = await peer(() => {})
    await new Promise((resolve) => server.close(resolve))
    await expect(sendProtocolCancel({ host: '127.0.0.1', port }, 1, 2, 1_000)).rejects.toThrow(/ECONNREFUSED/)
  })
})
