import type { CompiledQuery } from 'kysely'

/** The kinds of Kysely's query nodes that write: never taken for a read, whatever the caller said. */
const WRITES = new Set(['InsertQueryNode', 'UpdateQueryNode', 'DeleteQueryNode', 'MergeQueryNode'])

/**
 * Whether Kysely built `query` as a write (an insert, update, delete or
 * merge, or a select with such a statement in its `with`). Kysely's own tree,
 * not the SQL text; raw SQL (`sql\`...\``) is not known to write, and rests on
 * the caller's word alone.
 *
 * @example
 * ```ts
 * isKyselyWrite(db.insertInto('person').values({ name: 'a' }).compile()) // true
 * ```
 */
export function isKyselyWrite(query: CompiledQuery): boolean {
  const node = query.query as { readonly kind: string; readonly with?: { readonly expressions: ReadonlyArray<{ readonly expression: { readonly kind: string } }> } }
  if (WRITES.has(node.kind)) return true
  return node.with?.expressions.some((cte) => WRITES.has(cte.expression.kind)) ?? false
}
