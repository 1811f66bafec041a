#!/bin/sh
# Entry point of the locally built PostgreSQL test image (ops/pg-image/build.sh).
# It honours the environment of the official postgres image, which
# @testcontainers/postgresql sets: POSTGRES_USER (the bootstrap superuser,
# default postgres), POSTGRES_PASSWORD (required), POSTGRES_DB (default: the
# user's name). Like the official image: as root it prepares the data folder
# and runs itself again as `postgres`; on an empty data folder it runs initdb,
# creates the database with an init server that listens on the unix socket only
# (so a health check or port probe cannot see it as ready), stops it, and then
# starts the real server on 0.0.0.0:5432 with password (scram-sha-256) auth
# for TCP clients.
set -eu

# `docker run image -c x=y` means `postgres -c x=y`.
if [ "${1#-}" != "$1" ]; then
  set -- postgres "$@"
fi

if [ "$1" != postgres ]; then
  exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown -R postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "POSTGRES_PASSWORD must be set (the server accepts TCP clients with a password only)" >&2
    exit 1
  fi
  user="${POSTGRES_USER:-postgres}"
  db="${POSTGRES_DB:-$user}"
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --pgdata="$PGDATA" --username="$user" --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  # Any address may connect, with the password (the official image's rule).
  printf 'host all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  printf "listen_addresses = '0.0.0.0'\n" >>"$PGDATA/postgresql.conf"

  pg_ctl --pgdata="$PGDATA" --wait --silent \
    -o "-c listen_addresses='' -c unix_socket_directories=/var/run/postgresql" start
  if [ "$db" != postgres ]; then
    printf 'CREATE DATABASE :"db";\n' |
      psql --quiet --no-psqlrc -v ON_ERROR_STOP=1 -v db="$db" --username="$user" --dbname=postgres --host=/var/run/postgresql
  fi
  pg_ctl --pgdata="$PGDATA" --wait --silent --mode=fast stop
  echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
