-- pg-governor: a least-privilege role for the control connection.
--
-- The role is called `governor_control`, not `pg_governor_control`: PostgreSQL
-- reserves role names that start with `pg_` ("role name ... is reserved").
--
-- pg-governor cancels abandoned queries with `pg_cancel_backend(pid)`, sent on
-- one dedicated, long-lived "control" connection per dialect. PostgreSQL only
-- lets a session cancel a backend when
--   * both run as the same role, or
--   * the caller is a member of the built-in role `pg_signal_backend`, or
--   * the caller is a superuser.
-- Backends that run as a superuser can only be cancelled by a superuser;
-- `pg_signal_backend` is not enough for them (so don't run your app as one).
--
-- You need this file ONLY when the control connection logs in as a different
-- role from the application's pool. By default the control connection reuses
-- the pool's own options (same user), and a role may always cancel its own
-- backends: nothing to grant. Use a separate role when, for example, several
-- application roles share one control role, or when you want the control
-- connection to be able to cancel work of roles it does not share.
--
-- When pg_cancel_backend is not permitted (or the control connection cannot be
-- opened), pg-governor falls back to the protocol CancelRequest, which needs no
-- privileges but is never confirmed by the server; such connections are
-- destroyed rather than reused.
--
-- Run as a superuser (or a role with CREATEROLE and ADMIN OPTION on
-- pg_signal_backend), replacing the password:
--   psql "$ADMIN_URL" -v control_password=change-me -f sql/control-role.sql
--
-- Then point the dialect at it (the options are merged over the pool's):
--   new GovernedPostgresDialect({
--     pool,
--     controlConnection: { config: { connectionString: 'postgres://governor_control:change-me@db:5432/app' } },
--   })
-- If your pool was built from a `connectionString`, give the control
-- connection a `connectionString` too: pg lets a connection string win over
-- `user` and `password`, so `{ user: 'governor_control' }` alone would be ignored.

\if :{?control_password}
\else
  \set control_password change-me
  \echo 'control_password not set: using the placeholder password change-me'
\endif

do $$
begin
  if not exists (select from pg_roles where rolname = 'governor_control') then
    create role governor_control login;
  end if;
end
$$;

-- Nothing but LOGIN: no superuser, no role or database creation, no
-- replication. Keep the default INHERIT: the pg_signal_backend check goes
-- through inherited privileges. A handful of connections is plenty (one per
-- dialect per process).
alter role governor_control
  login nosuperuser nocreatedb nocreaterole noreplication nobypassrls
  connection limit 20
  password :'control_password';

-- The one privilege it needs: signalling (cancelling, terminating) non-superuser backends.
grant pg_signal_backend to governor_control;

-- It runs `select pg_cancel_backend($1)` and `select pg_terminate_backend($1)`
-- (Kysely's 'kill session' strategy); both are executable by PUBLIC, gated by
-- the membership above. It needs CONNECT on the database it logs in to, which
-- PUBLIC has by default; if you revoked that, grant it back, e.g.:
--   grant connect on database app to governor_control;

-- It does not need pg_read_all_stats: pg-governor cancels by the pid it got at
-- connection start and never reads pg_stat_activity. (Without it, this role
-- sees other roles' rows in pg_stat_activity with `state` and `query` hidden.)

-- Keep its own statements short, whatever the database default is.
alter role governor_control set statement_timeout = '5s';
alter role governor_control set idle_in_transaction_session_timeout = '5s';
