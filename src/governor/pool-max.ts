/** pg-pool's `max`, or pg-pool's own default of 10. */
export function poolMax(pool: { readonly options: object }): number {
  const max = (pool.options as { max?: unknown }).max
  return typeof max === 'number' && max > 0 ? max : 10
}
