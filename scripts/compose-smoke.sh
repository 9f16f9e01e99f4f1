#!/usr/bin/env bash
# Brings the compose stack up where a container engine exists (Docker with the compose plugin,
# or Podman with `podman compose` and docker-compose as its provider) and checks what a user would look at, then takes it down.
#   scripts/compose-smoke.sh [--keep] [--gpu] [--timeout SECONDS]
# Where:
#   --keep          leave the stack running afterwards (default: `down`, volumes kept)
#   --gpu           with deploy/compose.gpu.yaml (the CUDA image for infer; needs the NVIDIA
#                   container toolkit)
#   --timeout S     how long the stack may take to become healthy (default 600)
# Checks, in order, each failure named:
#   1. the CPU image builds and is under 1.5 GB; a Mask R-CNN model loads in it
#      (`orstream infer --check --config config/maskrcnn-check.toml`)
#   2. `compose up --wait`: Kafka and PostgreSQL healthy, the ACL job done, ingest, infer and
#      the sink ready (/readyz), Prometheus and Grafana healthy
#   3. Prometheus: every scrape target up, the alert rules loaded, frames counted
#   4. Grafana: the orstream pipeline dashboard provisioned
#   5. Jaeger: traces of the three services
#   6. the record: the demo case is listed and has a timeline
# Exits 0 when every check passed, 1 at the first that failed, 2 without a container engine.
source "$(dirname "$0")/lib.sh"

usage() { sed -n '2,/^# Exits/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }
keep=0 gpu=0 timeout=600
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) keep=1 ;;
    --gpu) gpu=1 ;;
    --timeout) timeout="${2:?--timeout SECONDS}"; shift ;;
    -h|--help) usage 0 ;;
    *) log "unknown option: $1"; usage ;;
  esac
  shift
done

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
  engine=docker compose=(docker compose)
elif command -v podman >/dev/null && podman compose version >/dev/null 2>&1; then
  # `podman compose` runs a compose provider (docker-compose) against Podman's socket.
  engine=podman compose=(podman compose)
else
  log "no container engine here (docker with its daemon running, or podman with a compose provider)"
  exit 2
fi
files=(-f "$ROOT/docker-compose.yml")
[ "$gpu" = 1 ] && files+=(-f "$ROOT/deploy/compose.gpu.yaml")
compose() { (cd "$ROOT" && "${compose[@]}" "${files[@]}" "$@"); }
fail() { log "FAILED: $*"; [ "$keep" = 1 ] || compose down >/dev/null 2>&1 || true; exit 1; }
passed() { log "ok: $*"; }
# get URL: the body, failing on an HTTP error.
get() { curl -fsS --max-time 10 "$1"; }
# json EXPR: evaluates a Python expression over the JSON on standard input (bound to `d`).
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

"$ROOT/scripts/compose-secrets.sh"

log "building the images"
compose build || fail "the image build"
bytes="$("$engine" image inspect orstream:dev --format '{{.Size}}')" || fail "no orstream:dev image"
mib=$((bytes / 1024 / 1024))
[ "$mib" -lt 1536 ] || fail "the CPU image is $mib MiB, over the 1.5 GB target"
passed "the CPU image is $mib MiB"
"$engine" run --rm orstream:dev infer --check --config config/maskrcnn-check.toml \
  || fail "a Mask R-CNN model does not load in the image"
passed "a Mask R-CNN model loads in the image"

log "starting the stack (up to ${timeout}s to become healthy)"
compose up -d --wait --wait-timeout "$timeout" || {
  compose ps
  compose logs --tail 40
  fail "the stack did not become healthy"
}
passed "every service healthy (ingest, infer and the sink ready)"

# Give Prometheus two scrapes of frames flowing.
sleep 20
targets="$(get http://127.0.0.1:9090/api/v1/targets)" || fail "Prometheus does not answer"
down="$(json "[t['labels']['job'] + ' ' + t['scrapeUrl'] for t in d['data']['activeTargets'] if t['health'] != 'up']" <<<"$targets")"
[ "$down" = "[]" ] || fail "Prometheus targets down: $down"
rules="$(get http://127.0.0.1:9090/api/v1/rules | json "sum(len(g['rules']) for g in d['data']['groups'])")"
[ "$rules" -gt 0 ] || fail "Prometheus loaded no alert rules"
frames="$(get 'http://127.0.0.1:9090/api/v1/query?query=sum(orstream_ingest_frames_published_total)' \
  | json "d['data']['result'][0]['value'][1] if d['data']['result'] else 0")"
python3 -c "import sys; sys.exit(0 if float('$frames') > 0 else 1)" || fail "no frames counted by Prometheus"
passed "Prometheus: every target up, $rules rules, $frames frames published"

dashboards="$(get 'http://127.0.0.1:3000/api/search?query=orstream' | json "len(d)")" || fail "Grafana does not answer"
[ "$dashboards" -gt 0 ] || fail "Grafana has no orstream dashboard"
passed "Grafana: the pipeline dashboard is provisioned"

services="$(get http://127.0.0.1:16686/api/services | json "' '.join(sorted(d['data'] or []))")" \
  || fail "Jaeger does not answer"
for service in orstream-ingest orstream-infer orstream-sink; do
  [[ " $services " == *" $service "* ]] || fail "Jaeger has no traces of $service (it has: $services)"
done
passed "Jaeger: traces of ingest, infer and the sink"

record=(exec -T sink orstream record --store-file /run/secrets/sink-store)
compose "${record[@]}" cases | grep -q demo-case-0001 || fail "the record does not list demo-case-0001"
compose "${record[@]}" timeline demo-case-0001 >/dev/null || fail "no timeline of demo-case-0001"
passed "the record: demo-case-0001 is listed and has a timeline"

if [ "$keep" = 1 ]; then
  log "the stack keeps running; stop it with: docker compose down"
else
  compose down >/dev/null
fi
log "compose smoke test passed"
