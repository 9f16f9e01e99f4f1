#!/usr/bin/env bash
# A single-node Apache Kafka 4.x (KRaft: broker + controller in one JVM) on 127.0.0.1.
#   scripts/kafka.sh start   resolve the jars (once), format storage (once), start, wait until it answers
#   scripts/kafka.sh stop    stop it
#   scripts/kafka.sh status     exit 0 when this checkout's broker runs and answers
#   scripts/kafka.sh bootstrap  print its address (host:port)
# Logs: .stack/kafka/server.log. Data: .stack/kafka/data.
# Ports: 9092 (clients) and 9093 (controller) when free at the first start, else free ones;
# kept in .stack/ports (see `claim_port` in lib.sh); $ORSTREAM_KAFKA_PORT and
# $ORSTREAM_KAFKA_CONTROLLER_PORT override them.
source "$(dirname "$0")/lib.sh"
DIR="$STATE/kafka"
LIBS="$DIR/libs"
PORT="$(stack_port KAFKA_PORT 9092)"
CPORT="$(stack_port KAFKA_CONTROLLER_PORT 9093)"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
mkdir -p "$DIR"

answers() { port_busy "$PORT"; }
# The broker this checkout started: the recorded process, still alive and still running on
# this state directory's configuration (a recycled pid is not taken for it).
pid() {
  local p
  p="$(cat "$DIR/pid" 2>/dev/null)" || return 1
  [ -n "$p" ] && tr '\0' ' ' 2>/dev/null < "/proc/$p/cmdline" | grep -qF "$DIR/server.properties" \
    && echo "$p"
}

resolve() {
  local pom="$ROOT/scripts/kafka/pom.xml"
  if [ -f "$LIBS/.pom" ] && cmp -s "$LIBS/.pom" "$pom"; then return; fi
  log "resolving Apache Kafka from Maven Central"
  rm -rf "$LIBS"
  mvn -q -B -Dstyle.color=never --no-transfer-progress -f "$pom" dependency:copy-dependencies -DoutputDirectory="$LIBS" -DincludeScope=runtime \
    || die "could not resolve Kafka with Maven (scripts/kafka/pom.xml)"
  cp "$pom" "$LIBS/.pom"
}

config() {
  cat > "$DIR/server.properties" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DIR/data
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=24
CONF
  cat > "$DIR/log4j2.properties" <<CONF
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$DIR/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
CONF
}

run_java() { "$JAVA" -Xms256m -Xmx1g -cp "$LIBS/*" -Dlog4j2.configurationFile="$DIR/log4j2.properties" "$@"; }

start() {
  if pid >/dev/null; then
    keep_port KAFKA_PORT "$PORT"
    keep_port KAFKA_CONTROLLER_PORT "$CPORT"
  fi
  PORT="$(claim_port KAFKA_PORT 9092)"
  CPORT="$(claim_port KAFKA_CONTROLLER_PORT 9093)"
  if pid >/dev/null; then wait_until_answering; return; fi
  for port in "$PORT" "$CPORT"; do
    port_busy "$port" && die "127.0.0.1:$port is in use by a server this checkout did not start \
(another checkout's stack?); stop it, or set ORSTREAM_KAFKA_PORT / ORSTREAM_KAFKA_CONTROLLER_PORT, \
or remove $STATE/ports to have free ports chosen"
  done
  resolve
  config
  if [ ! -f "$DIR/data/meta.properties" ]; then
    log "formatting Kafka storage in $DIR/data"
    run_java kafka.tools.StorageTool format -t "orstream-dev-cluster-0001" -c "$DIR/server.properties" \
      --standalone >"$DIR/format.log" 2>&1 \
      || run_java kafka.tools.StorageTool format -t "orstream-dev-cluster-0001" -c "$DIR/server.properties" \
           >"$DIR/format.log" 2>&1 \
      || die "formatting Kafka storage failed, see $DIR/format.log"
  fi
  log "starting Kafka on 127.0.0.1:$PORT"
  nohup "$JAVA" -Xms256m -Xmx1g -XX:+UseG1GC -cp "$LIBS/*" \
    -Dlog4j2.configurationFile="$DIR/log4j2.properties" \
    kafka.Kafka "$DIR/server.properties" >"$DIR/stdout.log" 2>&1 &
  echo $! > "$DIR/pid"
  wait_until_answering
}

wait_until_answering() {
  for _ in $(seq 1 120); do
    if answers; then return; fi
    pid >/dev/null || die "Kafka exited at start, see $DIR/server.log and $DIR/stdout.log"
    sleep 0.5
  done
  die "Kafka did not answer on 127.0.0.1:$PORT within 60 s, see $DIR/server.log"
}

stop() {
  local p; p="$(pid)" || exit 0
  log "stopping Kafka (pid $p)"
  kill "$p"
  for _ in $(seq 1 60); do kill -0 "$p" 2>/dev/null || { rm -f "$DIR/pid"; return; }; sleep 0.5; done
  kill -9 "$p" 2>/dev/null || true
  rm -f "$DIR/pid"
}

# Freezes (SIGSTOP) or thaws (SIGCONT) the broker: connections stay open, nothing answers.
signal_broker() {
  local p; p="$(pid)" || die "Kafka is not running"
  kill "-$1" "$p"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) pid >/dev/null && answers ;;
  pause) signal_broker STOP ;;
  resume) signal_broker CONT ;;
  bootstrap) echo "127.0.0.1:$PORT" ;;
  *) die "usage: scripts/kafka.sh start|stop|status|pause|resume|bootstrap" ;;
esac
