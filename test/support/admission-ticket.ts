import type { AdmissionTicket } from '../../src/admission/waiter.js'
import { criticalityRank, type Criticality } from '../../src/context/criticality.js'

/** A caller's ticket for the admission gate's unit tests, its budget counted from the (fake) clock's now. */
export function ticket(criticality: Criticality, timeoutMs = Infinity, signal?: AbortSignal): AdmissionTicket {
  const startedAt = Date.now()
  return { rank: criticalityRank(criticality), criticality, deadline: startedAt + timeoutMs, startedAt, context: undefined, signal }
}
