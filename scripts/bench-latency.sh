#!/usr/bin/env bash
# The latency benchmark: the real deployment on this machine (Kafka, PostgreSQL, infer workers,
# the sink) under `orstream load`, which prints capture -> result stamped / visible / record
# row committed, throughput, skips, losses and duplicates.
#
#   scripts/bench-latency.sh [--workers N] [--kill-infer-at SECONDS] [--infer-config FILE]
#                            [--sink-config FILE] [--warmup DURATION] [--keep-logs]
#                            [-- LOAD ARGS...]
#
# LOAD ARGS go to `orstream load` (default: --cameras 8 --fps 4 --duration 60s; the cameras
# show the demo clip's frames, 640x360 JPEG, unless LOAD ARGS name a --source). Each run has
# topics, groups, transactional ids and a case of its own, so runs never see each other's
# frames; the record is the stack's `orstream` database. Infer runs the demo model, live, one
# torch thread per worker (N workers, default 2). With --kill-infer-at S the first worker is
# killed with SIGKILL S seconds into the run and started again at once: the report must still
# show 0 lost and 0 duplicated. Before the measured run, a warm-up run of the same cameras
# (--warmup, default 10s; 0s for none) lets the infer group settle its partitions and the
# services fill their caches; its own report is printed in one line and not counted.
# --keep-logs keeps each service's log and final /metrics under .stack/bench/<run>.
# Exit status: `orstream load`'s (4 when a frame was lost, duplicated or not recorded).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

workers=2 kill_at="" infer_config="" sink_config="" keep_logs="" warmup=10s
while [ $# -gt 0 ]; do
  case "$1" in
    --workers) workers="$2"; shift 2 ;;
    --kill-infer-at) kill_at="$2"; shift 2 ;;
    --infer-config) infer_config="$2"; shift 2 ;;
    --sink-config) sink_config="$2"; shift 2 ;;
    --keep-logs) keep_logs=1; shift ;;
    --warmup) warmup="$2"; shift 2 ;;
    --) shift; break ;;
    *) die "unknown option $1 (see the head of $0)" ;;
  esac
done
load_args=("$@")
[ ${#load_args[@]} -gt 0 ] || load_args=(--cameras 8 --fps 4 --duration 60s)
# The cameras show the demo clip (640x360 JPEG at quality 85, 4 frames per second of it)
# unless the arguments name a --source of their own.
if ! printf '%s\n' "${load_args[@]}" | grep -qx -- --source; then
  clip="$STATE/bench/clip-640x360"
  if [ ! -s "$clip/frame-0000.jpg" ]; then
    mkdir -p "$clip"
    gst-launch-1.0 -q filesrc location="$ROOT/models/demo/clip.mp4" ! decodebin ! videoconvert \
      ! videoscale ! video/x-raw,width=640,height=360 ! videorate ! video/x-raw,framerate=4/1 \
      ! jpegenc quality=85 ! multifilesink location="$clip/frame-%04d.jpg" >&2
  fi
  load_args+=(--source "$clip")
fi

"$ROOT/scripts/bootstrap.sh" >&2
export PATH="$ROOT/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
cargo build --release --locked --bin orstream >&2
bin="$ROOT/target/release/orstream"
bootstrap="$("$ROOT/scripts/kafka.sh" bootstrap)"
store="$("$ROOT/scripts/postgres.sh" url)"
store="${store%/*}/orstream"

run="bench-$(date +%s)-$$"
logs="$STATE/bench/$run"
mkdir -p "$logs"
export ORSTREAM_INFER_FRAMES_TOPIC="$run.frames" ORSTREAM_INFER_RESULTS_TOPIC="$run.results" \
  ORSTREAM_INFER_DLQ_TOPIC="$run.frames.dlq" ORSTREAM_INFER_GROUP_ID="$run-infer" \
  ORSTREAM_INFER_KAFKA__BOOTSTRAP_SERVERS="$bootstrap" ORSTREAM_INFER_MODE=live \
  ORSTREAM_INFER_MODEL__PATH="$ROOT/models/demo/seg.pt" ORSTREAM_INFER_MODEL__TORCH_THREADS=1 \
  ORSTREAM_INFER_MODEL__REPLICAS=1
export ORSTREAM_SINK_RESULTS_TOPIC="$run.results" ORSTREAM_SINK_STREAMS_TOPIC="$run.streams" \
  ORSTREAM_SINK_EVENTS_TOPIC="$run.events" ORSTREAM_SINK_TRACKS_TOPIC="$run.tracks" \
  ORSTREAM_SINK_GROUP_ID="$run-sink" ORSTREAM_SINK_STORE="$store" \
  ORSTREAM_SINK_KAFKA__BOOTSTRAP_SERVERS="$bootstrap"
export ORSTREAM_LOAD_FRAMES_TOPIC="$run.frames" ORSTREAM_LOAD_STREAMS_TOPIC="$run.streams" \
  ORSTREAM_LOAD_RESULTS_TOPIC="$run.results" ORSTREAM_LOAD_KAFKA__BOOTSTRAP_SERVERS="$bootstrap" \
  ORSTREAM_LOAD_STORE="$store"
[ -z "$infer_config" ] || export ORSTREAM_INFER_CONFIG="$infer_config"
[ -z "$sink_config" ] || export ORSTREAM_SINK_CONFIG="$sink_config"

declare -A pids ports
start_infer() {
  ORSTREAM_INFER_TRANSACTIONAL_ID="$run-infer-$1" \
    "$bin" --metrics-listen "127.0.0.1:${ports[infer$1]}" infer >>"$logs/infer-$1.log" 2>&1 &
  pids[infer$1]=$!
}
stop_all() {
  if [ -n "$keep_logs" ]; then
    for name in "${!ports[@]}"; do
      curl -fsS "http://127.0.0.1:${ports[$name]}/metrics" >"$logs/$name.metrics" 2>/dev/null || true
    done
  fi
  for name in "${!pids[@]}"; do kill -TERM "${pids[$name]}" 2>/dev/null || true; done
  [ ! -s "$logs/infer-0.pid" ] || kill -TERM "$(cat "$logs/infer-0.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -n "$keep_logs" ]; then log "logs in $logs"; else rm -rf "$logs"; fi
}
trap stop_all EXIT
ready() { curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1; }

# The load tool creates the topics; the services wait for nothing then.
"$bin" load --prepare >&2
for i in $(seq 0 $((workers - 1))); do ports[infer$i]="$(free_port)"; start_infer "$i"; done
ports[sink]="$(free_port)"
"$bin" --metrics-listen "127.0.0.1:${ports[sink]}" sink >>"$logs/sink.log" 2>&1 &
pids[sink]=$!
for name in "${!ports[@]}"; do
  for _ in $(seq 1 240); do ready "${ports[$name]}" && break; sleep 0.5; done
  ready "${ports[$name]}" || { tail -n 40 "$logs"/*.log >&2; die "$name is not ready"; }
done
log "run $run: $workers infer workers and the sink are ready; playing ${load_args[*]}"

if [ "$warmup" != 0s ] && [ "$warmup" != 0 ]; then
  # The run's own arguments, less those naming its length and its output files.
  warm_args=() skip=""
  for arg in "${load_args[@]}"; do
    if [ -n "$skip" ]; then skip=""; continue; fi
    case "$arg" in --duration|--json|--frames-csv) skip=1; continue ;; esac
    warm_args+=("$arg")
  done
  "$bin" load --case "$run-warmup" "${warm_args[@]}" --duration "$warmup" 2>/dev/null \
    | grep -E "^frames:|^result visible" | sed 's/^/[warm-up] /' >&2 || true
fi
if [ -n "$kill_at" ]; then
  (
    sleep "$kill_at"
    log "killing infer-0 (SIGKILL) and starting it again"
    kill -KILL "${pids[infer0]}"
    ORSTREAM_INFER_TRANSACTIONAL_ID="$run-infer-0" \
      "$bin" --metrics-listen "127.0.0.1:${ports[infer0]}" infer >>"$logs/infer-0.log" 2>&1 &
    echo $! > "$logs/infer-0.pid"
  ) &
  pids[killer]=$!
fi
status=0
"$bin" load --case "$run" "${load_args[@]}" || status=$?
exit "$status"
