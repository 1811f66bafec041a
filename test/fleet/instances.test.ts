import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { useTestDatabase } from '../support/test-database.js'
import { useLimitedRole } from './support.js'

const database = useTestDatabase()
const INSTANCES = 3
// Nine sessions for the role: three control connections leave six for three pools of max 4 (twelve).
const role = useLimitedRole(database, 9)
const FIXTURE = fileURLToPath(new URL('./fixtures/instance.ts', import.meta.url))

interface InstanceReport {
  readonly counts: { readonly critical: { ok: number; total: number }; readonly sheddable: { ok: number; total: number } }
  readonly errors: Record<string, number>
  readonly peakHeld: number
  readonly refusals: number
  readonly ceiling: number
  readonly circuit: string
}

function instance(seed: number): Promise<InstanceReport> {
  const child = spawn(process.execPath, ['--import', 'tsx', FIXTURE], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      ...process.env,
      FLEET_URL: role.url(),
      FLEET_POOL_MAX: '4',
      FLEET_IDLE_MS: '500',
      FLEET_RATE: '60',
      FLEET_SECONDS: '3',
      FLEET_SLEEP_MS: '30',
      FLEET_DEADLINE_MS: '3000',
      FLEET_CRITICAL_PCT: '30',
      FLEET_SEED: String(seed),
    },
  })
  let out = ''
  let err = ''
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()))
  child.stderr.on('data', (chunk: Buffer) => (err += chunk.toString()))
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
    child.once('exit', (code) => {
      clearTimeout(timer)
      if (code !== 0) reject(new Error(`instance ${seed} exited with ${code}: ${err}`))
      else resolve(JSON.parse(out.trim().split('\n').pop() as string) as InstanceReport)
    })
  })
}

describe('several instances in processes of their own over-subscribing one role', () => {
  it('each keeps serving all its critical work, and no caller sees 53300', async () => {
    const reports = await Promise.all(Array.from({ length: INSTANCES }, (_, i) => instance(i + 1)))
    for (const [i, r] of reports.entries()) {
      console.log(
        `[instance ${i + 1}] critical ${r.counts.critical.ok}/${r.counts.critical.total}, sheddable ${r.counts.sheddable.ok}/${r.counts.sheddable.total}, ` +
          `errors ${JSON.stringify(r.errors)}, peak held ${r.peakHeld}, 53300 refusals waited out ${r.refusals}, ceiling at the end ${r.ceiling}, circuit ${r.circuit}`,
      )
    }
    for (const r of reports) {
      expect(r.counts.critical.total).toBeGreaterThan(20)
      expect(r.counts.critical.ok).toBe(r.counts.critical.total)
      // Callers see admission's refusals at most, never the server's.
      expect(Object.keys(r.errors).filter((code) => !code.startsWith('LOAD_SHED:'))).toEqual([])
      expect(r.circuit).toBe('closed')
    }
    // The pools did over-subscribe (the server refused them), and slots moved: their peaks, at different times, add up to more than the six slots.
    expect(reports.reduce((sum, r) => sum + r.refusals, 0)).toBeGreaterThan(0)
    expect(reports.reduce((sum, r) => sum + r.peakHeld, 0)).toBeGreaterThan(6)
  })
})
