-- pg-governor demo schema: a small shop with customers, orders and a
-- report-ish table that is slow to aggregate on purpose.
--
-- Safe to run more than once: everything is dropped and recreated.
-- Used by `npm run demo` (demo/index.ts); you can also load it by hand:
--   psql "$DATABASE_URL" -f sql/demo-schema.sql

drop function if exists demo_pause(text);
drop table if exists demo_settings;
drop table if exists order_lines;
drop table if exists orders;
drop table if exists customers;
drop table if exists daily_sales;

create table customers (
  id          bigint generated always as identity primary key,
  email       text not null unique,
  name        text not null,
  tier        text not null default 'standard' check (tier in ('standard', 'gold', 'platinum')),
  created_at  timestamptz not null default now()
);

create table orders (
  id           bigint generated always as identity primary key,
  customer_id  bigint not null references customers (id),
  status       text not null default 'placed' check (status in ('placed', 'paid', 'shipped', 'cancelled')),
  total_cents  integer not null check (total_cents >= 0),
  placed_at    timestamptz not null default now()
);
create index orders_customer_id_idx on orders (customer_id);
create index orders_placed_at_idx on orders (placed_at);

create table order_lines (
  order_id     bigint not null references orders (id) on delete cascade,
  line_no      integer not null,
  sku          text not null,
  quantity     integer not null check (quantity > 0),
  price_cents  integer not null check (price_cents >= 0),
  primary key (order_id, line_no)
);

-- The kind of table a nightly report writes and a dashboard reads: the sort of
-- work that should run as `sheddable` so it never starves checkout traffic.
create table daily_sales (
  day          date primary key,
  orders       integer not null,
  revenue_cents bigint not null,
  refreshed_at timestamptz not null default now()
);

-- Seed: 50 customers, 2 000 orders with 1-4 lines each, deterministic.
insert into customers (email, name, tier)
select
  format('customer%s@example.com', n),
  format('Customer %s', n),
  case when n % 10 = 0 then 'platinum' when n % 4 = 0 then 'gold' else 'standard' end
from generate_series(1, 50) as n;

insert into orders (customer_id, status, total_cents, placed_at)
select
  1 + (n * 7) % 50,
  (array['placed', 'paid', 'shipped', 'cancelled'])[1 + n % 4],
  0,
  timestamptz '2026-01-01 00:00:00+00' + make_interval(hours => n)
from generate_series(1, 2000) as n;

insert into order_lines (order_id, line_no, sku, quantity, price_cents)
select
  o.id,
  l,
  format('SKU-%s', 100 + (o.id * l) % 37),
  1 + (o.id + l) % 3,
  199 + ((o.id * 31 + l * 17) % 50) * 100
from orders as o
cross join lateral generate_series(1, 1 + (o.id % 4)::int) as l;

update orders as o
set total_cents = t.total
from (
  select order_id, sum(quantity * price_cents)::int as total
  from order_lines
  group by order_id
) as t
where t.order_id = o.id;

insert into daily_sales (day, orders, revenue_cents)
select placed_at::date, count(*), sum(total_cents)
from orders
where status <> 'cancelled'
group by placed_at::date;

analyze customers;
analyze orders;
analyze order_lines;
analyze daily_sales;

-- Simulated slowness, for the demo's "the database got slow" phase. Each
-- route's query calls demo_pause('<route>'), which sleeps as long as this
-- table says: extra_ms, except that a share of the calls (spike_share, 0..1)
-- sleeps spike_ms instead, the long tail of a bad plan. The demo raises the
-- values halfway through its load (think of a bad deploy, or a noisy
-- neighbour), and every backend sees the change at its next query. pg_sleep
-- is interruptible, so a cancelled query stops sleeping at once.
create table demo_settings (
  route        text primary key,
  extra_ms     integer not null default 0 check (extra_ms >= 0),
  spike_ms     integer not null default 0 check (spike_ms >= 0),
  spike_share  real not null default 0 check (spike_share between 0 and 1)
);
insert into demo_settings (route) values ('orders'), ('report');

-- Sleeps as demo_settings says for the route, returns the milliseconds slept.
-- Call it once per statement, as an uncorrelated scalar subquery
-- `(select demo_pause('report'))`: PostgreSQL evaluates that once (an InitPlan),
-- not once per row.
create function demo_pause(p_route text) returns integer
language plpgsql volatile as $$
declare
  v_ms integer;
begin
  select case when random() < spike_share then spike_ms else extra_ms end
    into v_ms
    from demo_settings
   where route = p_route;
  if v_ms > 0 then
    perform pg_sleep(v_ms / 1000.0);
  end if;
  return coalesce(v_ms, 0);
end
$$;
