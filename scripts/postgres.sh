#!/usr/bin/env bash
# A project-local PostgreSQL cluster on 127.0.0.1 (data in .stack/postgres, log beside it).
#   scripts/postgres.sh start   initdb (once), start, wait until ready, create role + databases
#   scripts/postgres.sh stop
#   scripts/postgres.sh status  exit 0 when it accepts connections
#   scripts/postgres.sh url     print the test database URL
# Role/password orstream/orstream; databases `orstream` and `orstream_test`.
# Port: $ORSTREAM_POSTGRES_PORT (55432, away from a system cluster on 5432).
source "$(dirname "$0")/lib.sh"
PORT="${ORSTREAM_POSTGRES_PORT:-55432}"
DIR="$STATE/postgres"
DATA="$DIR/data"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -n "$BIN" ] || die "PostgreSQL server binaries not found; run scripts/install-packages.sh"

# The server refuses to run as root: run it as the `postgres` system user then.
if [ "$(id -u)" = 0 ]; then
  pg() { runuser -u postgres -- "$@"; }
else
  pg() { "$@"; }
fi

ready() { "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; }

start() {
  if ready; then ensure_databases; exit 0; fi
  mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$DIR"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    log "initialising PostgreSQL cluster in $DATA"
    pg "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 || die "initdb failed, see $DIR/initdb.log"
  fi
  log "starting PostgreSQL on 127.0.0.1:$PORT"
  pg "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=200 -c fsync=on" \
    start >/dev/null || die "PostgreSQL did not start, see $DIR/server.log"
  ensure_databases
}

psql_admin() { pg psql -X -q -h "$DIR" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

ensure_databases() {
  psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname='orstream'" | grep -q 1 \
    || psql_admin -c "CREATE ROLE orstream LOGIN PASSWORD 'orstream' CREATEDB"
  for db in orstream orstream_test; do
    psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1 \
      || psql_admin -c "CREATE DATABASE $db OWNER orstream"
  done
}

stop() {
  ready || [ -f "$DATA/postmaster.pid" ] || exit 0
  log "stopping PostgreSQL"
  pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) ready ;;
  url) echo "postgres://orstream:orstream@127.0.0.1:$PORT/orstream_test" ;;
  *) die "usage: scripts/postgres.sh start|stop|status|url" ;;
esac
