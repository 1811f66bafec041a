/**
 * Reads a V8 .cpuprofile (node --cpu-prof) and says where the CPU went:
 * self time by package and by function, and inclusive time under chosen
 * frames (a listener plus everything it calls).
 */
import { readFileSync } from 'node:fs'

interface CallFrame {
  readonly functionName: string
  readonly url: string
  readonly lineNumber: number
  readonly columnNumber: number
}

interface ProfileNode {
  readonly id: number
  readonly callFrame: CallFrame
  readonly hitCount?: number
  readonly children?: readonly number[]
}

interface CpuProfile {
  readonly nodes: readonly ProfileNode[]
  readonly startTime: number
  readonly endTime: number
  readonly samples: readonly number[]
}

export interface FrameFilter {
  readonly label: string
  /** A frame that starts the bucket: it and everything it calls count. */
  readonly match: (frame: CallFrame) => boolean
  /** When set, `match` only counts below a frame matching this (e.g. a listener only when called by an event emitter). */
  readonly within?: (frame: CallFrame) => boolean
}

export interface ProfileSummary {
  /** Sampled time, idle excluded, in ms. */
  readonly busyMs: number
  readonly byPackage: { readonly name: string; readonly selfMs: number }[]
  readonly topFunctions: { readonly name: string; readonly where: string; readonly selfMs: number }[]
  readonly inclusive: { readonly label: string; readonly ms: number }[]
}

/** Which package a frame's code belongs to. */
export function packageOf(frame: CallFrame): string {
  const url = frame.url
  if (url === '') return frame.functionName.startsWith('(') ? frame.functionName : 'V8/native'
  const nm = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)
  // The bench's builds of src/ live under node_modules/.cache/pg-governor-bench*/ (see lib.ts).
  if (/\/node_modules\/\.cache\/pg-governor-bench[^/]*\//.test(url) || url.includes('/src/')) return 'pg-governor'
  if (nm) return nm[1] as string
  if (url.startsWith('node:')) return 'node internals'
  if (url.includes('/bench/')) return 'bench harness'
  return url
}

function shortWhere(frame: CallFrame): string {
  const url = frame.url
  const file = url.replace(/^.*\/node_modules\/\.cache\/pg-governor-bench[^/]*\/lib[^/]*\//, 'build/').replace(/^.*\/node_modules\//, '').replace(/^file:\/\//, '')
  return `${file}:${frame.lineNumber + 1}`
}

export function summarizeCpuProfile(path: string, filters: readonly FrameFilter[], top = 15): ProfileSummary {
  const profile = JSON.parse(readFileSync(path, 'utf8')) as CpuProfile
  const msPerSample = profile.samples.length > 0 ? (profile.endTime - profile.startTime) / 1000 / profile.samples.length : 0
  const byId = new Map(profile.nodes.map((node) => [node.id, node]))
  const hits = new Map<number, number>()
  for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1)
  const selfMs = (node: ProfileNode): number => (hits.get(node.id) ?? node.hitCount ?? 0) * msPerSample

  let busyMs = 0
  const packages = new Map<string, number>()
  const functions = new Map<string, { name: string; where: string; selfMs: number }>()
  for (const node of profile.nodes) {
    const ms = selfMs(node)
    if (ms === 0 || node.callFrame.functionName === '(idle)') continue
    busyMs += ms
    const pkg = packageOf(node.callFrame)
    packages.set(pkg, (packages.get(pkg) ?? 0) + ms)
    const where = shortWhere(node.callFrame)
    const key = `${node.callFrame.functionName}@${where}`
    const entry = functions.get(key) ?? { name: node.callFrame.functionName || '(anonymous)', where, selfMs: 0 }
    entry.selfMs += ms
    functions.set(key, entry)
  }

  // Inclusive: a sample counts for a filter when any frame on its stack matches (once, however deep the
  // nesting). State per filter: 0 outside, 1 below a `within` frame, 2 inside a matching frame.
  const inclusive = filters.map(() => 0)
  const step = (state: number, filter: FrameFilter, frame: CallFrame): number => {
    if (state === 2) return 2
    if ((state === 1 || !filter.within) && filter.match(frame)) return 2
    if (filter.within?.(frame)) return 1
    return state
  }
  const root = profile.nodes[0]
  const stack: { node: ProfileNode; states: number[] }[] = root ? [{ node: root, states: filters.map((f) => step(0, f, root.callFrame)) }] : []
  while (stack.length > 0) {
    const { node, states } = stack.pop() as { node: ProfileNode; states: number[] }
    const ms = selfMs(node)
    if (ms > 0 && node.callFrame.functionName !== '(idle)') {
      states.forEach((state, i) => {
        if (state === 2) inclusive[i] = (inclusive[i] ?? 0) + ms
      })
    }
    for (const childId of node.children ?? []) {
      const child = byId.get(childId)
      if (child) stack.push({ node: child, states: states.map((state, i) => step(state, filters[i] as FrameFilter, child.callFrame)) })
    }
  }

  return {
    busyMs,
    byPackage: [...packages].map(([name, ms]) => ({ name, selfMs: ms })).sort((a, b) => b.selfMs - a.selfMs),
    topFunctions: [...functions.values()].sort((a, b) => b.selfMs - a.selfMs).slice(0, top),
    inclusive: filters.map((f, i) => ({ label: f.label, ms: inclusive[i] ?? 0 })),
  }
}
