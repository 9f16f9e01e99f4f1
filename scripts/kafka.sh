#!/usr/bin/env bash
# A single-node Apache Kafka 4.x (KRaft: broker + controller in one JVM) on 127.0.0.1.
#   scripts/kafka.sh start   resolve the jars (once), format storage (once), start, wait until it answers
#   scripts/kafka.sh stop    stop it
#   scripts/kafka.sh status  exit 0 when it answers
# Logs: .stack/kafka/server.log. Data: .stack/kafka/data. Port: $ORSTREAM_KAFKA_PORT (9092).
source "$(dirname "$0")/lib.sh"
DIR="$STATE/kafka"
LIBS="$DIR/libs"
PORT="${ORSTREAM_KAFKA_PORT:-9092}"
CPORT="${ORSTREAM_KAFKA_CONTROLLER_PORT:-9093}"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
mkdir -p "$DIR"

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
pid() { [ -f "$DIR/pid" ] && kill -0 "$(cat "$DIR/pid")" 2>/dev/null && cat "$DIR/pid"; }

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
  if answers; then exit 0; fi
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

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) answers ;;
  *) die "usage: scripts/kafka.sh start|stop|status" ;;
esac
