/**
 * The child side of fault-proxy-process.ts: runs one fault proxy in this
 * process and applies the parent's commands, in order, as they arrive over
 * IPC. Reports its counts whenever they change. Exits when the parent says
 * `close` or goes away.
 */
import { startFaultProxy } from './fault-proxy.js'
import type { ProxyCommand, ProxyReport } from './fault-proxy-process.js'
import { seededRandom } from './seeded-random.js'

const send = (report: ProxyReport): void => {
  process.send?.(report)
}

const [url, seed] = [process.argv[2] as string, process.argv[3]]
const proxy = await startFaultProxy(url, seed === undefined ? {} : { random: seededRandom(Number(seed)) })
let last = { connections: -1, accepted: -1 }
// Counts change on accept and close, which no command announces: look every few ms, send only changes.
const counts = setInterval(() => {
  const { connections, accepted } = proxy
  if (connections === last.connections && accepted === last.accepted) return
  last = { connections, accepted }
  send({ type: 'counts', connections, accepted })
}, 5)
process.on('disconnect', () => process.exit(0))
process.on('message', (command: ProxyCommand) => {
  switch (command.op) {
    case 'toxics':
      proxy.toxics(command.direction, command.toxics)
      break
    case 'mode':
      proxy.mode = command.mode
      break
    case 'timeout':
    case 'refuseFor':
      proxy[command.op](command.ms)
      break
    case 'hold':
    case 'heal':
    case 'reset':
    case 'clear':
      proxy[command.op]()
      break
    case 'close':
      clearInterval(counts)
      void proxy.close().then(() => {
        send({ type: 'closed' })
        process.disconnect()
      })
      return
  }
  send({ type: 'done', seq: command.seq })
})
send({ type: 'ready', url: proxy.url, port: proxy.port })
