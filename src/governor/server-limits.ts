/**
 * The server's connection limits as one role sees them, read once at start on
 * the control connection. `reserved_connections` exists from PostgreSQL 16
 * (0 before); members of `pg_use_reserved_connections` may use those slots,
 * superusers every slot.
 */
export const SERVER_LIMITS_SQL = `select current_setting('max_connections')::int as max_connections,
  current_setting('superuser_reserved_connections')::int as superuser_reserved_connections,
  coalesce(nullif(current_setting('reserved_connections', true), ''), '0')::int as reserved_connections,
  r.rolsuper as superuser,
  case when exists (select 1 from pg_roles where rolname = 'pg_use_reserved_connections')
    then pg_has_role(current_user, 'pg_use_reserved_connections', 'member') else false end as uses_reserved,
  r.rolconnlimit as role_connection_limit,
  d.datconnlimit as database_connection_limit
from pg_roles r, pg_database d
where r.rolname = current_user and d.datname = current_database()`

/** One row of {@link SERVER_LIMITS_SQL}. */
export interface ServerLimitsRow {
  readonly max_connections: number
  readonly superuser_reserved_connections: number
  readonly reserved_connections: number
  readonly superuser: boolean
  readonly uses_reserved: boolean
  readonly role_connection_limit: number
  readonly database_connection_limit: number
}

/**
 * What bounds the sessions this pool's role can have: the server's slots,
 * the role's CONNECTION LIMIT or the database's.
 *
 * @example
 * ```ts
 * dialect.events.on('serverLimits', (event) => { if (event.limitedBy === 'role') console.log('the role limit binds') })
 * ```
 */
export type SlotsLimitedBy = 'server' | 'role' | 'database'

/**
 * The server's limits against this pool's size and the expected fleet,
 * emitted once at start (and logged as a warning when `fits` is false).
 *
 * @example
 * ```ts
 * dialect.events.on('serverLimits', (event) => {
 *   if (!event.fits) console.warn(`pool max ${event.poolMax} x ${event.expectedInstances} instances needs ${event.needed} of ${event.usableSlots} slots; use max ${event.suggestedPoolMax}`)
 * })
 * ```
 */
export interface ServerLimitsEvent {
  readonly maxConnections: number
  readonly superuserReservedConnections: number
  /** PostgreSQL 16+'s `reserved_connections`, 0 before. */
  readonly reservedConnections: number
  /** The role's CONNECTION LIMIT, undefined when it has none. */
  readonly roleConnectionLimit: number | undefined
  /** The database's CONNECTION LIMIT, undefined when it has none. */
  readonly databaseConnectionLimit: number | undefined
  /** Sessions the pool's role can open in all: the lowest of the server's slots for it and the two limits. */
  readonly usableSlots: number
  readonly limitedBy: SlotsLimitedBy
  readonly poolMax: number
  readonly expectedInstances: number
  /** `expectedInstances × (poolMax + 1)`: each instance's pool and its control connection. */
  readonly needed: number
  readonly fits: boolean
  /** The largest pool max that fits: `floor(usableSlots / expectedInstances) - 1` (at least 1). */
  readonly suggestedPoolMax: number
}

/**
 * The sizing rule: the role's usable slots (max_connections less
 * superuser_reserved_connections and reserved_connections, unless the role
 * may use them; or its role/database connection limit when lower), shared by
 * the instances, one control connection each.
 *
 * @example
 * ```ts
 * const event = sizeFleet(row, { poolMax: 10, expectedInstances: 4 })
 * if (!event.fits) console.warn(event.suggestedPoolMax)
 * ```
 */
export function sizeFleet(row: ServerLimitsRow, fleet: { readonly poolMax: number; readonly expectedInstances: number }): ServerLimitsEvent {
  const maxConnections = Number(row.max_connections)
  const superuserReserved = Number(row.superuser_reserved_connections)
  const reserved = Number(row.reserved_connections)
  const server = row.superuser ? maxConnections : maxConnections - superuserReserved - (row.uses_reserved ? 0 : reserved)
  const roleLimit = Number(row.role_connection_limit) >= 0 && !row.superuser ? Number(row.role_connection_limit) : undefined
  const databaseLimit = Number(row.database_connection_limit) >= 0 && !row.superuser ? Number(row.database_connection_limit) : undefined
  let usableSlots = Math.max(0, server)
  let limitedBy: SlotsLimitedBy = 'server'
  if (roleLimit !== undefined && roleLimit < usableSlots) {
    usableSlots = roleLimit
    limitedBy = 'role'
  }
  if (databaseLimit !== undefined && databaseLimit < usableSlots) {
    usableSlots = databaseLimit
    limitedBy = 'database'
  }
  const { poolMax, expectedInstances } = fleet
  const needed = expectedInstances * (poolMax + 1)
  return {
    maxConnections,
    superuserReservedConnections: superuserReserved,
    reservedConnections: reserved,
    roleConnectionLimit: roleLimit,
    databaseConnectionLimit: databaseLimit,
    usableSlots,
    limitedBy,
    poolMax,
    expectedInstances,
    needed,
    fits: needed <= usableSlots,
    suggestedPoolMax: Math.max(1, Math.floor(usableSlots / expectedInstances) - 1),
  }
}

/**
 * Busy application backends where the slots are counted: the role's own
 * sessions when its limit binds, the database's when that one does, every
 * client backend otherwise. Idle sessions hold a slot but no CPU and are
 * handed back by idle timeouts, so they do not count. Without
 * pg_read_all_stats (pg_monitor), other roles' sessions show no state and are
 * not counted either. The sampling session itself is left out.
 */
export function saturationSql(limitedBy: SlotsLimitedBy): string {
  const scope = limitedBy === 'role' ? ' and usename = current_user' : limitedBy === 'database' ? ' and datname = current_database()' : ''
  return `select count(*)::int as busy from pg_stat_activity where backend_type = 'client backend' and state is not null and state <> 'idle' and pid <> pg_backend_pid()${scope}`
}
