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
 * max_connections or behind PgBouncer, but the server never confirms it:
 * resolves when the server has closed the socket, which it does after reading
 * the request.
 */
export function sendProtocolCancel(target: CancelTarget, pid: number, secretKey: number, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket: Socket = target.host.startsWith('/')
      ? connect(`${target.host}/.s.PGSQL.${target.port}`)
      : connect(target.port, target.host)
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`protocol cancel to ${target.host}:${target.port} timed out after ${timeoutMs} ms`))
    }, timeoutMs)
    socket.setNoDelay(true)
    socket.once('connect', () => {
      const message = Buffer.alloc(16)
      message.writeInt32BE(16, 0)
      message.writeInt32BE(CANCEL_REQUEST_CODE, 4)
      message.writeInt32BE(pid, 8)
      message.writeInt32BE(secretKey | 0, 12)
      socket.end(message)
    })
    socket.once('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
    socket.once('close', (hadError) => {
      clearTimeout(timer)
      if (!hadError) resolve()
    })
    socket.resume()
  })
}
