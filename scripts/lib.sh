# Shared helpers for the dev-stack scripts. Sourced, not run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Everything the scripts create at run time lives here (ignored by git).
STATE="${ORSTREAM_STATE_DIR:-$ROOT/.stack}"
mkdir -p "$STATE"
log() { printf '[orstream] %s\n' "$*" >&2; }
die() { printf '[orstream] error: %s\n' "$*" >&2; exit 1; }
# Run as root directly, otherwise through sudo.
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# True when something accepts TCP connections on 127.0.0.1:$1.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The ports of this checkout's stack. ORSTREAM_<NAME> in the environment wins; else the port
# recorded in $STATE/ports/<NAME> at the stack's first start; else the default. A second
# checkout on the same machine records ports of its own, so it never takes another checkout's
# server for its own.
#   stack_port NAME DEFAULT   print the port
#   claim_port NAME DEFAULT   the same, recording it first if nothing is recorded: the default
#                             when it is free, else a free port
#   keep_port NAME PORT       record PORT if nothing is recorded (this checkout's server already
#                             runs there)
stack_port() {
  local var="ORSTREAM_$1" file="$STATE/ports/$1"
  if [ -n "${!var:-}" ]; then echo "${!var}"
  elif [ -s "$file" ]; then cat "$file"
  else echo "$2"; fi
}
claim_port() {
  local var="ORSTREAM_$1" file="$STATE/ports/$1" port
  if [ -z "${!var:-}" ] && [ ! -s "$file" ]; then
    port="$2"
    if port_busy "$port"; then
      port="$(free_port)"
      log "127.0.0.1:$2 is taken by another server; this checkout's stack uses $port for $1"
    fi
    keep_port "$1" "$port"
  fi
  stack_port "$1" "$2"
}
keep_port() {
  local var="ORSTREAM_$1" file="$STATE/ports/$1"
  [ -n "${!var:-}" ] || [ -s "$file" ] && return
  mkdir -p "$STATE/ports"
  echo "$2" > "$file"
}
