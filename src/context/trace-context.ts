import type { QueryContext } from './query-context.js'

/** The ids of the OpenTelemetry span that was active. */
export interface TraceIds {
  readonly traceId: string
  readonly spanId: string
  readonly traceFlags: number
}

let provider: (() => TraceIds | undefined) | undefined
let loading: Promise<boolean> | undefined

/** The active span's ids, when OpenTelemetry is enabled and a span is active. */
export function activeTrace(): TraceIds | undefined {
  return provider?.()
}

/** The trace of an event: the one captured with its query context, else the span active now. */
export function traceOf(context: QueryContext | undefined): TraceIds | undefined {
  return context?.trace ?? provider?.()
}

/**
 * Reads trace ids from `@opentelemetry/api` (an optional peer) from now on.
 * Resolves false, and changes nothing, when the package is not installed.
 */
export function enableOpenTelemetryTraces(): Promise<boolean> {
  return (loading ??= import('@opentelemetry/api').then(
    (api) => {
      provider = () => {
        const spanContext = api.trace.getActiveSpan()?.spanContext()
        if (!spanContext || !api.isSpanContextValid(spanContext)) return undefined
        return { traceId: spanContext.traceId, spanId: spanContext.spanId, traceFlags: spanContext.traceFlags }
      }
      return true
    },
    () => false,
  ))
}

/** A W3C traceparent for the ids. */
export function traceparent(trace: TraceIds): string {
  return `00-${trace.traceId}-${trace.spanId}-${(trace.traceFlags & 0xff).toString(16).padStart(2, '0')}`
}
