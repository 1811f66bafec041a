import { afterAll, beforeAll } from 'vitest'
import { pgbouncerBinary, startPgBouncer, type PgBouncer, type PgBouncerOptions } from '../support/pgbouncer.js'

/** A PgBouncer in front of a test file's database, started before its tests and stopped after. */
export interface PgBouncerFixture {
  /** The file's database through PgBouncer (only inside tests and hooks). */
  readonly url: string
  readonly instance: PgBouncer
}

/**
 * Starts a PgBouncer for the file in `beforeAll` and stops it in `afterAll`
 * (and, whatever happens, when the process ends). When pgbouncer is not
 * installed, says so loudly and returns undefined: wrap the tests in
 * `describe.skipIf(!fixture)`.
 */
export function usePgBouncer(databaseUrl: () => string, options: PgBouncerOptions): PgBouncerFixture | undefined {
  if (!pgbouncerBinary()) {
    console.warn(`\n!!! SKIPPED: pgbouncer is not installed, so the PgBouncer (${options.poolMode} pooling) tests do not run (apt-get install -y pgbouncer) !!!\n`)
    return undefined
  }
  let instance: PgBouncer | undefined
  let url: string | undefined
  beforeAll(async () => {
    instance = await startPgBouncer(databaseUrl(), options)
    url = instance.urlFor(databaseUrl())
  })
  afterAll(async () => {
    await instance?.stop()
  })
  return {
    get url() {
      if (!url) throw new Error('the PgBouncer fixture is only available inside tests and hooks')
      return url
    },
    get instance() {
      if (!instance) throw new Error('the PgBouncer fixture is only available inside tests and hooks')
      return instance
    },
  }
}
