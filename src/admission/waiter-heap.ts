/** An entry of the wait queue: lower `rank` first, then earlier `deadline`, then arrival. */
export interface HeapEntry {
  readonly rank: number
  readonly deadline: number
  readonly seq: number
  /** Position in the heap, -1 when not queued. Maintained by the heap. */
  heapIndex: number
}

/**
 * A binary heap that can remove any entry in O(log n), so that an aborted or
 * expired waiter leaves the queue the moment it gives up.
 */
export class WaiterHeap<T extends HeapEntry> {
  readonly #items: T[] = []

  get size(): number {
    return this.#items.length
  }

  peek(): T | undefined {
    return this.#items[0]
  }

  push(entry: T): void {
    entry.heapIndex = this.#items.length
    this.#items.push(entry)
    this.#up(entry.heapIndex)
  }

  pop(): T | undefined {
    const top = this.#items[0]
    if (top) this.remove(top)
    return top
  }

  /** Removes `entry` if it is queued; returns whether it was. */
  remove(entry: T): boolean {
    const index = entry.heapIndex
    if (index < 0 || this.#items[index] !== entry) return false
    const last = this.#items.pop() as T
    entry.heapIndex = -1
    if (last !== entry) {
      this.#items[index] = last
      last.heapIndex = index
      this.#down(index)
      this.#up(last.heapIndex)
    }
    return true
  }

  #less(a: T, b: T): boolean {
    if (a.rank !== b.rank) return a.rank < b.rank
    if (a.deadline !== b.deadline) return a.deadline < b.deadline
    return a.seq < b.seq
  }

  #up(index: number): void {
    const items = this.#items
    const entry = items[index] as T
    while (index > 0) {
      const parentIndex = (index - 1) >> 1
      const parent = items[parentIndex] as T
      if (!this.#less(entry, parent)) break
      items[index] = parent
      parent.heapIndex = index
      index = parentIndex
    }
    items[index] = entry
    entry.heapIndex = index
  }

  #down(index: number): void {
    const items = this.#items
    const length = items.length
    const entry = items[index] as T
    for (;;) {
      const left = 2 * index + 1
      if (left >= length) break
      const right = left + 1
      let child = left
      if (right < length && this.#less(items[right] as T, items[left] as T)) child = right
      const childEntry = items[child] as T
      if (!this.#less(childEntry, entry)) break
      items[index] = childEntry
      childEntry.heapIndex = index
      index = child
    }
    items[index] = entry
    entry.heapIndex = index
  }
}
