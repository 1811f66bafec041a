/**
 * Conformance of GovernedPostgresDialect with Kysely's PostgresDialect:
 * `db.introspection` gives the same tables, columns and schemas.
 */
import type { Kysely } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { useTestDatabase } from '../support/test-database.js'
import { createHarness, DIALECTS, expectPoolIdle, type DialectName, type Harness } from './dialects.js'

const database = useTestDatabase()

beforeAll(async () => {
  await database.admin(`
    create schema inventory;
    create type mood as enum ('happy', 'sad');
    create table person (
      id serial primary key,
      email text not null unique,
      nickname varchar(20) default 'anon',
      feeling mood,
      tags text[],
      created_at timestamptz not null default now()
    );
    comment on column person.email is 'where we write';
    create view adult as select id, email from person;
    create table inventory.thing (
      id bigint generated always as identity primary key,
      payload jsonb,
      owner_id int references person (id)
    );
    create table kysely_migration (name varchar(255) primary key, timestamp varchar(255) not null);
    alter table person add column dropped int;
    alter table person drop column dropped;
  `)
})

const harnesses = new Map<DialectName, Harness<any>>()

afterAll(async () => {
  await Promise.all([...harnesses.values()].map((h) => h.db.destroy()))
})

function db(dialect: DialectName): Kysely<any> {
  const h = harnesses.get(dialect)
  if (!h) throw new Error(`${dialect} has not been set up`)
  return h.db
}

const PERSON = {
  name: 'person',
  schema: 'public',
  isView: false,
  isForeign: false,
  columns: [
    { name: 'id', dataType: 'int4', dataTypeSchema: 'pg_catalog', isNullable: false, isAutoIncrementing: true, hasDefaultValue: true, comment: undefined },
    { name: 'email', dataType: 'text', dataTypeSchema: 'pg_catalog', isNullable: false, isAutoIncrementing: false, hasDefaultValue: false, comment: 'where we write' },
    { name: 'nickname', dataType: 'varchar', dataTypeSchema: 'pg_catalog', isNullable: true, isAutoIncrementing: false, hasDefaultValue: true, comment: undefined },
    { name: 'feeling', dataType: 'mood', dataTypeSchema: 'public', isNullable: true, isAutoIncrementing: false, hasDefaultValue: false, comment: undefined },
    { name: 'tags', dataType: '_text', dataTypeSchema: 'pg_catalog', isNullable: true, isAutoIncrementing: false, hasDefaultValue: false, comment: undefined },
    {
      name: 'created_at',
      dataType: 'timestamptz',
      dataTypeSchema: 'pg_catalog',
      isNullable: false,
      isAutoIncrementing: false,
      hasDefaultValue: true,
      comment: undefined,
    },
  ],
}

describe.each(DIALECTS)('%s', (dialect, makeDialect) => {
  let h: Harness<any>

  beforeAll(() => {
    h = createHarness<any>(database, makeDialect)
    harnesses.set(dialect, h)
  })

  it('getTables() lists user tables and views with their columns', async () => {
    const tables = await h.db.introspection.getTables()
    expect(tables.map((t) => `${t.schema}.${t.name}${t.isView ? ' (view)' : ''}`)).toEqual(['inventory.thing', 'public.adult (view)', 'public.person'])
    expect(tables.find((t) => t.name === 'person')).toEqual(PERSON)
    expect(tables.find((t) => t.name === 'thing')?.columns.map((c) => [c.name, c.dataType, c.isAutoIncrementing, c.isNullable])).toEqual([
      ['id', 'int8', true, false],
      ['payload', 'jsonb', false, true],
      ['owner_id', 'int4', false, true],
    ])
  })

  it('getTables({ withInternalKyselyTables: true }) includes kysely_migration', async () => {
    const tables = await h.db.introspection.getTables({ withInternalKyselyTables: true })
    expect(tables.map((t) => `${t.schema}.${t.name}`)).toEqual(['inventory.thing', 'public.adult', 'public.kysely_migration', 'public.person'])
  })

  it('getSchemas() lists the schemas', async () => {
    const schemas = (await h.db.introspection.getSchemas()).map((s) => s.name)
    expect(schemas).toEqual(expect.arrayContaining(['public', 'inventory', 'pg_catalog', 'information_schema']))
  })

  it('leaves its pool idle', async () => {
    await expectPoolIdle(h)
  })
})

describe('parity', () => {
  it('getTables() is equal on both dialects', async () => {
    const [reference, governed] = await Promise.all([
      db('PostgresDialect').introspection.getTables(),
      db('GovernedPostgresDialect').introspection.getTables(),
    ])
    expect(reference.length).toBeGreaterThan(0)
    expect(governed).toEqual(reference)
  })

  it('getTables({ withInternalKyselyTables: true }) is equal on both dialects', async () => {
    const options = { withInternalKyselyTables: true }
    const [reference, governed] = await Promise.all([
      db('PostgresDialect').introspection.getTables(options),
      db('GovernedPostgresDialect').introspection.getTables(options),
    ])
    expect(governed).toEqual(reference)
  })

  it('getSchemas() is equal on both dialects', async () => {
    const [reference, governed] = await Promise.all([
      db('PostgresDialect').introspection.getSchemas(),
      db('GovernedPostgresDialect').introspection.getSchemas(),
    ])
    expect(reference.length).toBeGreaterThan(0)
    expect(governed).toEqual(reference)
  })
})
