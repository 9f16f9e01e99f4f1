#!/usr/bin/env bash
# Certificates for the checkout's stack: a private certificate authority (CA), a server
# certificate signed by it for localhost and 127.0.0.1 (PostgreSQL, and the broker's TLS
# listeners), and client certificates signed by it (mutual TLS). Idempotent: what exists is
# kept, so clients that trust the CA go on trusting it.
#   scripts/tls.sh ensure            make what is missing in .stack/tls; print the directory
#   scripts/tls.sh dir               print the directory (.stack/tls)
#   scripts/tls.sh client NAME       make (once) a client certificate whose subject's common
#                                    name is NAME: client-NAME.crt and client-NAME.key
#   scripts/tls.sh server NAME HOST...  make (once) server-NAME.crt/.key for those host names
#                                    and addresses (another host than localhost: compose's)
#   scripts/tls.sh ca DIR            a new CA of its own in DIR (ca.crt, ca.key): one nobody
#                                    trusts, to check that a server it did not sign is refused
# $ORSTREAM_TLS_DIR puts all of it in another directory (scripts/compose-secrets.sh).
# Keys are RSA 2048, certificates valid ten years; none of it is for production, where the
# hospital's own CA signs the certificates.
source "$(dirname "$0")/lib.sh"
TLS="${ORSTREAM_TLS_DIR:-$STATE/tls}"
DAYS=3650

# A CA (ca.crt, ca.key) in $1 unless there is one.
make_ca() {
  local dir="$1"
  [ -s "$dir/ca.crt" ] && [ -s "$dir/ca.key" ] && return
  mkdir -p "$dir"
  (umask 077; openssl genrsa -out "$dir/ca.key" 2048 2>/dev/null)
  openssl req -x509 -new -key "$dir/ca.key" -sha256 -days "$DAYS" \
    -subj "/CN=orstream development CA $(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$dir/ca.crt" 2>/dev/null || die "could not make a CA in $dir"
}

# A certificate $2.crt/$2.key in $TLS signed by the CA, subject CN $1, extensions $3.
sign() {
  local cn="$1" base="$TLS/$2" ext="$3"
  [ -s "$base.crt" ] && [ -s "$base.key" ] && return
  (umask 077; openssl genrsa -out "$base.key" 2048 2>/dev/null)
  openssl req -new -key "$base.key" -subj "/CN=$cn" -out "$base.csr" 2>/dev/null
  printf '%s\n' "$ext" > "$base.ext"
  openssl x509 -req -in "$base.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" -CAcreateserial \
    -days "$DAYS" -sha256 -extfile "$base.ext" -out "$base.crt" 2>/dev/null \
    || die "could not sign $base.crt"
  rm -f "$base.csr" "$base.ext"
}

ensure() {
  command -v openssl >/dev/null || die "openssl not found; run scripts/install-packages.sh"
  make_ca "$TLS"
  sign localhost server "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1"
}

server() {
  local name="$1" san="" host
  shift
  [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || die "a server name is letters, digits, '_', '.' or '-': $name"
  [ $# -gt 0 ] || die "usage: scripts/tls.sh server NAME HOST..."
  for host in "$@"; do
    if [[ "$host" =~ ^[0-9.]+$ ]]; then san+="IP:$host,"; else san+="DNS:$host,"; fi
  done
  make_ca "$TLS"
  sign "$name" "server-$name" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=${san%,}"
}

client() {
  [[ "$1" =~ ^[A-Za-z0-9_.-]+$ ]] || die "a client name is letters, digits, '_', '.' or '-': $1"
  ensure
  sign "$1" "client-$1" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
}

case "${1:-}" in
  ensure) ensure; echo "$TLS" ;;
  dir) echo "$TLS" ;;
  client) [ -n "${2:-}" ] || die "usage: scripts/tls.sh client NAME"; client "$2"; echo "$TLS" ;;
  server) [ -n "${2:-}" ] || die "usage: scripts/tls.sh server NAME HOST..."; shift; server "$@"; echo "$TLS" ;;
  ca) [ -n "${2:-}" ] || die "usage: scripts/tls.sh ca DIR"; make_ca "$2" ;;
  *) die "usage: scripts/tls.sh ensure|dir|server NAME HOST...|client NAME|ca DIR" ;;
esac
