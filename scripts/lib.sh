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
