import { connect, type Socket } from 'node:net'

const CANCEL_REQUEST_CODE = 80877102

/** Where to send a protocol CancelRequest. */
export interface CancelTarget {
  readonly host: string
  readonly port: number
}

/**
 * Sends a protocol CancelRequest (pid + secret key) on a fresh socket. It needs
 * no login and no connection slot, so it works when the server is at
 * max_connections or behind PgBouncer, but the server never confirms it.
 *
 * Sent as libpq sends it: the 16 bytes are written and the socket is left
 * open until the peer closes it (the server does so once it has read the
 * request and signalled the backend; PgBouncer once it has forwarded it). A
 * client that closes first crashes PgBouncer 1.18 ("disconnect_client(): bad
 * client state", PgBouncer #801), and it would also resolve before the
 * request was read. Bounded by `timeoutMs`: past it the socket is destroyed
 * and the promise rejects.
 *
 * @example
 * ```ts
 * await sendProtocolCancel({ host: '127.0.0.1', port: 6432 }, client.processID, client.secretKey, 1_000)
 * ```
 */
export function sendProtocolCancel(target: CancelTarget, pid: number, secretKey: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket: Socket = target.host.startsWith('/')
      ? connect(`${target.host}/.s.PGSQL.${target.port}`)
      : connect(target.port, target.host)
    let settled = false
    const finish = (error: Error | undefined): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      if (error) reject(error)
      else resolve()
    }
    const timer = setTimeout(() => {
      socket.destroy()
      finish(new Error(`protocol cancel to ${target.host}:${target.port}: the peer did not close the socket within ${timeoutMs} ms`))
    }, timeoutMs)
    socket.setNoDelay(true)
    socket.once('connect', () => {
      const message = Buffer.alloc(16)
      message.writeInt32BE(16, 0)
      message.writeInt32BE(CANCEL_REQUEST_CODE, 4)
      message.writeInt32BE(pid, 8)
      message.writeInt32BE(secretKey | 0, 12)
      // write, not end: the peer closes first (see above); our side ends when it does (allowHalfOpen is off).
      socket.write(message)
    })
    socket.once('error', (error) => finish(error))
    socket.once('close', (hadError) => {
      if (!hadError) finish(undefined)
    })
    socket.resume()
  })
}
