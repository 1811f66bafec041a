-- pg-governor diagnostics: what a DBA asks when a service says "the database is slow".
-- Run with psql as a role that can read pg_stat_activity of other roles
-- (superuser, or a member of pg_read_all_stats). Each query stands alone.

-- 1. Long-running statements, oldest first. pg-governor tags its control
--    connection as '<application_name> (pg-governor control)'; with
--    `sqlComment: true` each statement starts with /*criticality=...,domain=...*/.
select pid,
       application_name,
       usename,
       now() - query_start as running_for,
       wait_event_type,
       wait_event,
       left(query, 200) as query
from pg_stat_activity
where state = 'active'
  and pid <> pg_backend_pid()
  and now() - query_start > interval '1 second'
order by query_start;

-- 2. Backends by application_name and state: one line per pool.
select application_name,
       state,
       count(*) as backends,
       max(now() - state_change) as longest_in_state
from pg_stat_activity
where backend_type = 'client backend'
group by application_name, state
order by application_name, state;

-- 3. Sessions idle in a transaction: they hold locks and snapshots. pg-governor
--    rolls back a connection released inside a transaction, so these come from
--    elsewhere or from a caller still holding its connection.
select pid,
       application_name,
       usename,
       now() - xact_start as transaction_age,
       now() - state_change as idle_for,
       left(query, 200) as last_query
from pg_stat_activity
where state in ('idle in transaction', 'idle in transaction (aborted)')
order by xact_start;

-- 4. Who waits on whose locks.
select waiting.pid as waiting_pid,
       waiting.application_name as waiting_application,
       now() - waiting.query_start as waiting_for,
       left(waiting.query, 120) as waiting_query,
       blocking.pid as blocking_pid,
       blocking.application_name as blocking_application,
       blocking.state as blocking_state,
       left(blocking.query, 120) as blocking_query
from pg_stat_activity as waiting
join lateral unnest(pg_blocking_pids(waiting.pid)) as blocker(pid) on true
join pg_stat_activity as blocking on blocking.pid = blocker.pid
order by waiting.query_start;

-- 5. The statement_timeout each session runs with right now is not visible from
--    other sessions; this shows the defaults that apply before pg-governor sets
--    its step (role and database settings override the server's).
select coalesce(r.rolname, '(all roles)') as role,
       coalesce(d.datname, '(all databases)') as database,
       s.setconfig
from pg_db_role_setting as s
left join pg_roles as r on r.oid = s.setrole
left join pg_database as d on d.oid = s.setdatabase;

-- 6. Connections left before max_connections (the protocol cancel still works at zero).
select current_setting('max_connections')::int - count(*) as connections_left,
       current_setting('max_connections')::int as max_connections
from pg_stat_activity;
