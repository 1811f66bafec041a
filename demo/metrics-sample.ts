/**
 * A scrape of the governed service's /metrics, boiled down to one telling line.
 */

export interface MetricsSample {
  readonly status: number
  readonly contentType: string
  /** Sample lines (not comments) in the scrape. */
  readonly series: number
  /** The busiest pg_governor_queries_total series with outcome="shed", else the first pg_governor line. */
  readonly line: string | undefined
}

export async function sampleMetrics(url: string): Promise<MetricsSample> {
  const response = await fetch(url, { signal: AbortSignal.timeout(5_000) })
  const text = await response.text()
  const series = text.split('\n').filter((line) => line !== '' && !line.startsWith('#'))
  const value = (line: string) => Number(line.slice(line.lastIndexOf(' ') + 1))
  const shed = series.filter((line) => line.startsWith('pg_governor_queries_total{') && line.includes('outcome="shed"') && value(line) > 0)
  shed.sort((a, b) => value(b) - value(a))
  return {
    status: response.status,
    contentType: response.headers.get('content-type') ?? '',
    series: series.length,
    line: shed[0] ?? series.find((line) => line.startsWith('pg_governor_')),
  }
}
