#!/usr/bin/env bash
# A PostgreSQL cluster of this checkout's own, reached over TCP on 127.0.0.1 only.
#   scripts/postgres.sh start   initdb (once), start, wait until ready, create role + databases
#   scripts/postgres.sh stop
#   scripts/postgres.sh status  exit 0 when this checkout's server runs and accepts connections
#   scripts/postgres.sh url     print the test database URL (no TLS)
#   scripts/postgres.sh tls-url print it with sslmode=verify-full and the stack's CA
#   scripts/postgres.sh dir     print where the cluster (data, logs) lives
# Role/password orstream/orstream; databases `orstream` and `orstream_test`.
# TLS: the server takes TLS connections (and plaintext ones, for the tests that use them) with
# a certificate for localhost and 127.0.0.1 signed by the stack's CA (scripts/tls.sh). It asks
# clients for a certificate signed by that CA and checks any they send. The role
# `orstream_cert` logs in by certificate only (a client certificate whose common name is
# orstream_cert, `scripts/tls.sh client orstream_cert`), over TLS only.
# Port: 55432 (away from a system cluster on 5432) when free at the first start, else a free
# one; kept in .stack/ports (see `claim_port` in lib.sh); $ORSTREAM_POSTGRES_PORT overrides it.
#
# Where the cluster lives: .stack/postgres for a normal user. The server refuses to run as
# root, so for root it runs as the `postgres` system user, who may not be able to enter the
# checkout (a clone under root's home, mode 700): the cluster then lives in
# /var/lib/orstream/<id>/postgres, <id> naming this checkout's state directory, and the server
# and every tool run from `/`. The server opens no Unix socket: everything talks TCP, the
# superuser with a password generated at initdb and kept beside the data (mode 600).
source "$(dirname "$0")/lib.sh"
PORT="$(stack_port POSTGRES_PORT 55432)"
BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
[ -n "$BIN" ] || die "PostgreSQL server binaries not found; run scripts/install-packages.sh"

if [ "$(id -u)" = 0 ]; then
  DIR="/var/lib/orstream/$(printf '%s' "$STATE" | sha256sum | cut -c1-12)/postgres"
  pg() { (cd / && runuser -u postgres -- "$@"); }
else
  DIR="$STATE/postgres"
  pg() { "$@"; }
fi
DATA="$DIR/data"
PASSFILE="$DIR/superuser-password"

# This checkout's server is running: its postmaster.pid names a live server (pg_ctl checks).
running() { [ -f "$DATA/postmaster.pid" ] && pg "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }
# The port the running server listens on (line 4 of postmaster.pid).
running_port() { sed -n 4p "$DATA/postmaster.pid" 2>/dev/null; }
ready() { running && "$BIN/pg_isready" -q -h 127.0.0.1 -p "$(running_port)"; }

start() {
  running && keep_port POSTGRES_PORT "$(running_port)"
  PORT="$(claim_port POSTGRES_PORT 55432)"
  if running; then
    [ "$(running_port)" = "$PORT" ] \
      || die "this checkout's PostgreSQL runs on port $(running_port), not $PORT; scripts/postgres.sh stop first"
    wait_ready
    if serves_tls; then
      ensure_databases
      return
    fi
    log "restarting PostgreSQL to turn TLS on"
    pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
  fi
  port_busy "$PORT" && die "127.0.0.1:$PORT is in use by a server this checkout did not start \
(another checkout's stack?); stop it, or set ORSTREAM_POSTGRES_PORT, or remove $STATE/ports/POSTGRES_PORT \
to have a free port chosen"
  mkdir -p "$DIR"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$DIR"
  chmod 700 "$DIR"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    log "initialising PostgreSQL cluster in $DATA"
    local pwfile="$DIR/.initdb-password"
    (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$pwfile")
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$pwfile"
    pg "$BIN/initdb" -D "$DATA" -U postgres --pwfile="$pwfile" --auth-local=peer \
      --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$DIR/initdb.log" 2>&1 \
      || { rm -f "$pwfile"; die "initdb failed, see $DIR/initdb.log"; }
    mv "$pwfile" "$PASSFILE"
  fi
  [ -s "$PASSFILE" ] || die "$DATA was made without a superuser password (an older layout); \
remove $DIR and start again"
  server_tls
  log "starting PostgreSQL on 127.0.0.1:$PORT (cluster in $DIR)"
  pg "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories='' -c max_connections=200 -c fsync=on \
-c ssl=on -c ssl_cert_file=$DIR/tls/server.crt -c ssl_key_file=$DIR/tls/server.key -c ssl_ca_file=$DIR/tls/ca.crt" \
    start >/dev/null || die "PostgreSQL did not start, see $DIR/server.log"
  wait_ready
  ensure_databases
}

# The server's certificate and key, and the CA it checks client certificates against, copied
# beside the cluster (the server runs as `postgres`, which must own its key); the certificate
# login of `orstream_cert` in pg_hba.conf, ahead of every other line.
server_tls() {
  local tls; tls="$("$ROOT/scripts/tls.sh" ensure)"
  mkdir -p "$DIR/tls"
  cp "$tls/server.crt" "$tls/server.key" "$tls/ca.crt" "$DIR/tls/"
  chmod 600 "$DIR/tls/server.key"
  [ "$(id -u)" = 0 ] && chown -R postgres:postgres "$DIR/tls"
  local hba="$DATA/pg_hba.conf" line="hostssl all orstream_cert 127.0.0.1/32 cert"
  if ! grep -qxF "$line" "$hba"; then
    pg sh -c "{ echo '$line'; cat '$hba'; } > '$hba.new' && mv '$hba.new' '$hba'"
  fi
}

# Whether the running server takes TLS connections (a server an older script started does not).
serves_tls() { [ "$(psql_admin -tAc 'SHOW ssl' 2>/dev/null)" = on ]; }

wait_ready() {
  for _ in $(seq 1 60); do ready && return; sleep 0.5; done
  die "PostgreSQL does not accept connections on 127.0.0.1:$PORT, see $DIR/server.log"
}

psql_admin() {
  PGPASSWORD="$(cat "$PASSFILE")" "$BIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres \
    -v ON_ERROR_STOP=1 "$@"
}

ensure_databases() {
  psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname='orstream'" | grep -q 1 \
    || psql_admin -c "CREATE ROLE orstream LOGIN PASSWORD 'orstream' CREATEDB"
  # Certificate login only (pg_hba.conf); a member of orstream, so it works on its schemas.
  psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname='orstream_cert'" | grep -q 1 \
    || psql_admin -c "CREATE ROLE orstream_cert LOGIN IN ROLE orstream"
  for db in orstream orstream_test; do
    psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname='$db'" | grep -q 1 \
      || psql_admin -c "CREATE DATABASE $db OWNER orstream"
  done
}

stop() {
  running || exit 0
  log "stopping PostgreSQL"
  pg "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
}

# Freezes (SIGSTOP) or thaws (SIGCONT) the server: the postmaster and every backend, so
# connections stay open and nothing answers: a hung database, for the chaos tests.
signal_all() {
  running || die "PostgreSQL is not running"
  local main; main="$(sed -n 1p "$DATA/postmaster.pid")"
  kill "-$1" "$main" $(pgrep -P "$main") 2>/dev/null || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) ready ;;
  pause) signal_all STOP ;;
  resume) signal_all CONT ;;
  url) echo "postgres://orstream:orstream@127.0.0.1:$PORT/orstream_test" ;;
  tls-url) echo "postgres://orstream:orstream@localhost:$PORT/orstream_test?sslmode=verify-full&sslrootcert=$("$ROOT/scripts/tls.sh" dir)/ca.crt" ;;
  dir) echo "$DIR" ;;
  *) die "usage: scripts/postgres.sh start|stop|status|pause|resume|url|tls-url|dir" ;;
esac
