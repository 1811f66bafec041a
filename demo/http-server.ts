/**
 * A node:http server on 127.0.0.1 and a free port, and the JSON answer both
 * services write.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http'

export interface RunningServer {
  /** `http://127.0.0.1:<port>` */
  readonly url: string
  /** Stops listening and closes every connection, idle or not. */
  close(): Promise<void>
}

export async function listen(listener: (req: IncomingMessage, res: ServerResponse) => void): Promise<RunningServer> {
  const server = http.createServer(listener)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const address = server.address()
  if (address === null || typeof address !== 'object') throw new Error('the HTTP server has no address')
  return {
    url: `http://127.0.0.1:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': String(Buffer.byteLength(text)) })
  res.end(text)
}
