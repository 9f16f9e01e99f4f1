#!/usr/bin/env bash
# The project's test command: set-up (scripts/bootstrap.sh), then formatting, lints and every
# test of the workspace against the real Kafka broker and PostgreSQL it started, then the
# README's run command (`make demo`: the embedded demo, release build), which must account for
# every frame (it exits 4 when it does not). Ends with how long each phase took.
source "$(dirname "$0")/lib.sh"
phases=()
# Runs "$@" as the phase named $1's work, noting its duration.
phase() {
  local name="$1" start=$SECONDS
  shift
  "$@"
  phases+=("$name $((SECONDS - start))s")
}
phase set-up "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
# This checkout's broker and database (their ports may not be the defaults: scripts/lib.sh).
export ORSTREAM_KAFKA_BOOTSTRAP="${ORSTREAM_KAFKA_BOOTSTRAP:-$("$ROOT/scripts/kafka.sh" bootstrap)}"
export ORSTREAM_POSTGRES_URL="${ORSTREAM_POSTGRES_URL:-$("$ROOT/scripts/postgres.sh" url)}"
log "cargo fmt --check"
phase fmt cargo fmt --all -- --check
log "cargo clippy (all targets, warnings are errors)"
phase clippy cargo clippy --workspace --all-targets --locked -- -D warnings
# Built first, apart from the run, so the figures below split build time from test time.
log "cargo test: build"
phase test-build cargo test --workspace --locked --no-run
log "cargo test"
phase tests cargo test --workspace --locked --no-fail-fast
log "the README's run command: build"
phase demo-build cargo build --release --locked --bin orstream
log "the README's run command: make demo"
phase demo make --no-print-directory demo
log "passed; time per phase: ${phases[*]}"
