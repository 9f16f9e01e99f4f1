#!/usr/bin/env bash
# The project's run command: set-up for building, then the embedded demo (no servers needed).
# Arguments go to `orstream demo`.
source "$(dirname "$0")/lib.sh"
"$ROOT/scripts/bootstrap.sh" build
cd "$ROOT"
cargo run --release --locked --bin orstream -- demo "$@"
