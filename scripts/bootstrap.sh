#!/usr/bin/env bash
# All set-up on a fresh machine, idempotent and quiet when already done:
# Debian packages, the Python venv with torch, the Kafka jars and a running single-node Kafka,
# a running project-local PostgreSQL.
#   scripts/bootstrap.sh            everything
#   scripts/bootstrap.sh build      only what building needs (packages, venv)
source "$(dirname "$0")/lib.sh"
"$ROOT/scripts/install-packages.sh"
"$ROOT/scripts/install-python.sh"
[ "${1:-}" = build ] && exit 0
"$ROOT/scripts/kafka.sh" start
"$ROOT/scripts/postgres.sh" start
