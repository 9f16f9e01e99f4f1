#!/usr/bin/env bash
# The project's test command: set-up (scripts/bootstrap.sh), then formatting, lints and every
# test of the workspace against the real Kafka broker and PostgreSQL it started, then the
# README's run command (`make demo`: the embedded demo, release build), which must account for
# every frame (it exits 4 when it does not).
source "$(dirname "$0")/lib.sh"
"$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
export ORSTREAM_KAFKA_BOOTSTRAP="${ORSTREAM_KAFKA_BOOTSTRAP:-127.0.0.1:${ORSTREAM_KAFKA_PORT:-9092}}"
export ORSTREAM_POSTGRES_URL="${ORSTREAM_POSTGRES_URL:-$("$ROOT/scripts/postgres.sh" url)}"
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo test"
cargo test --workspace --locked
log "the README's run command: make demo"
make --no-print-directory demo
