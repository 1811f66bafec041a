import { describe, expect, it } from 'vitest'
import { WaiterHeap, type HeapEntry } from '../../src/admission/waiter-heap.js'

function entry(rank: number, deadline: number, seq: number): HeapEntry {
  return { rank, deadline, seq, heapIndex: -1 }
}

describe('WaiterHeap', () => {
  it('pops by criticality, then deadline, then arrival, with removals anywhere', () => {
    const heap = new WaiterHeap<HeapEntry>()
    const entries: HeapEntry[] = []
    let seq = 0
    let state = 7
    const next = () => (state = (state * 48271) % 2147483647) / 2147483647
    for (let i = 0; i < 500; i++) {
      const e = entry(Math.floor(next() * 4), Math.floor(next() * 50), seq++)
      entries.push(e)
      heap.push(e)
    }
    const removed = new Set(entries.filter((_, i) => i % 3 === 0))
    for (const e of removed) expect(heap.remove(e)).toBe(true)
    for (const e of removed) expect(heap.remove(e)).toBe(false)
    const expected = entries
      .filter((e) => !removed.has(e))
      .sort((a, b) => a.rank - b.rank || a.deadline - b.deadline || a.seq - b.seq)
    const popped: HeapEntry[] = []
    while (heap.size > 0) popped.push(heap.pop() as HeapEntry)
    expect(popped).toEqual(expected)
    expect(popped.every((e) => e.heapIndex === -1)).toBe(true)
  })
})
