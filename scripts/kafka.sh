#!/usr/bin/env bash
# A single-node Apache Kafka 4.x (KRaft: broker + controller in one JVM) on 127.0.0.1.
#   scripts/kafka.sh start   resolve the jars (once), format storage (once), start, wait until it
#                            answers, create the users (once); a broker running with another
#                            configuration (one an older script started) is restarted
#   scripts/kafka.sh stop    stop it
#   scripts/kafka.sh status     exit 0 when this checkout's broker runs and answers
#   scripts/kafka.sh bootstrap  print its plaintext address (host:port)
#   scripts/kafka.sh sasl-bootstrap  print the SASL_SSL listener's address (localhost:port)
#   scripts/kafka.sh ssl-bootstrap   print the mutual-TLS listener's address (localhost:port)
#   scripts/kafka.sh user NAME       create the SCRAM user NAME unless it exists (broker running)
#   scripts/kafka.sh password NAME   the same, then print the path of NAME's password file
#   scripts/kafka.sh pause|resume    freeze (SIGSTOP) or thaw (SIGCONT) the broker
#   scripts/kafka.sh libs            resolve the jars (once) and print their directory
# Logs: .stack/kafka/server.log. Data: .stack/kafka/data.
#
# Listeners, all on 127.0.0.1:
#   PLAINTEXT   9092  no encryption, no authentication: principal User:ANONYMOUS, a super user
#                     (every test and the demo use it, with full access)
#   CONTROLLER  9093  KRaft controller (plaintext, User:ANONYMOUS)
#   SASL_SSL    9094  TLS, then SCRAM-SHA-512 with a user and password: principal User:<user>
#   SSL         9095  mutual TLS: the client must show a certificate signed by the stack's CA;
#                     its subject CN=<name> is the principal User:<name>
# The TLS listeners show the server certificate scripts/tls.sh makes (localhost, 127.0.0.1),
# signed by the stack's CA (.stack/tls/ca.crt); they are advertised as localhost:<port>, the
# name clients verify. The StandardAuthorizer checks every request against the ACLs
# (scripts/kafka-acls.sh makes the services'); super users: User:ANONYMOUS and User:admin; no ACL
# means no access (allow.everyone.if.no.acl.found=false).
# Users: admin, ingest, infer, sink (and any `user NAME`), SCRAM-SHA-512; passwords generated
# once into .stack/kafka/secrets/NAME.password (mode 600). Fresh storage gets them at format
# time; an existing one through the PLAINTEXT listener with Kafka's ConfigCommand. A stamp
# beside the password (NAME.stamp: the storage's directory id and the password's hash) records
# that the broker has it, so a start after that runs no tool.
# Ports: 9092, 9093, 9094, 9095 when free at the first start, else free ones; kept in
# .stack/ports (see `claim_port` in lib.sh); $ORSTREAM_KAFKA_PORT,
# $ORSTREAM_KAFKA_CONTROLLER_PORT, $ORSTREAM_KAFKA_SASL_PORT and $ORSTREAM_KAFKA_SSL_PORT
# override them.
source "$(dirname "$0")/lib.sh"
DIR="$STATE/kafka"
LIBS="$DIR/libs"
SECRETS="$DIR/secrets"
PORT="$(stack_port KAFKA_PORT 9092)"
CPORT="$(stack_port KAFKA_CONTROLLER_PORT 9093)"
SASL_PORT="$(stack_port KAFKA_SASL_PORT 9094)"
SSL_PORT="$(stack_port KAFKA_SSL_PORT 9095)"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
USERS=(admin ingest infer sink)
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

# $2 (a file) moved to $1 unless $1 already has that content: files the running broker reads
# are not rewritten for nothing.
install_file() {
  if cmp -s "$2" "$1"; then rm -f "$2"; else mv "$2" "$1"; fi
}

# The broker's TLS material in $DIR/tls, from the stack's CA and server certificate
# (scripts/tls.sh): server.pem, the private key and the certificate chain (a PEM key store),
# and ca.crt, the CA that client certificates must chain to (a PEM trust store).
tls_material() {
  local tls; tls="$("$ROOT/scripts/tls.sh" ensure)"
  mkdir -p "$DIR/tls"
  chmod 700 "$DIR/tls"
  (umask 077; cat "$tls/server.key" "$tls/server.crt" "$tls/ca.crt" > "$DIR/tls/server.pem.new")
  install_file "$DIR/tls/server.pem" "$DIR/tls/server.pem.new"
  cp "$tls/ca.crt" "$DIR/tls/ca.crt.new"
  install_file "$DIR/tls/ca.crt" "$DIR/tls/ca.crt.new"
}

# The broker's configuration, on stdout. Its first line carries the hash of the TLS material,
# so a new certificate changes the configuration too (and `start` restarts the broker).
# Its ssl.principal.mapping.rules: a certificate whose subject starts with CN=<name> is User:<name>,
# except CN=ANONYMOUS, which keeps its whole subject (User:CN=ANONYMOUS): a certificate must not
# become the super user that the plaintext listener's clients are.
render_config() {
  cat <<CONF
# TLS material: $(cat "$DIR/tls/server.pem" "$DIR/tls/ca.crt" | sha256sum | cut -d' ' -f1)
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT,SASL_SSL://127.0.0.1:$SASL_PORT,SSL://127.0.0.1:$SSL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,SASL_SSL://localhost:$SASL_PORT,SSL://localhost:$SSL_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
inter.broker.listener.name=PLAINTEXT
ssl.keystore.type=PEM
ssl.keystore.location=$DIR/tls/server.pem
ssl.truststore.type=PEM
ssl.truststore.location=$DIR/tls/ca.crt
ssl.enabled.protocols=TLSv1.3,TLSv1.2
listener.name.ssl.ssl.client.auth=required
listener.name.sasl_ssl.ssl.client.auth=none
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.principal.mapping.rules=RULE:^CN=(?!ANONYMOUS(?:,|\$))([^,]+)(?:,.*)?\$/\$1/,DEFAULT
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;User:admin
allow.everyone.if.no.acl.found=false
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
}
config() {
  render_config > "$DIR/server.properties"
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
# One of Kafka's command-line tools: a small heap, a quick start, warnings only.
run_tool() {
  "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$LIBS/*" \
    -Dlog4j2.configurationFile="$ROOT/scripts/kafka/tools-log4j2.properties" "$@"
}

# --- users ---------------------------------------------------------------------------------
valid_user() {
  [[ "$1" =~ ^[A-Za-z0-9_.-]+$ ]] || die "a user name is letters, digits, '_', '.' or '-': $1"
  [ "$1" != ANONYMOUS ] || die "ANONYMOUS is the plaintext listener's super user, not a SCRAM user"
}
password_file() { echo "$SECRETS/$1.password"; }
# NAME's password file, generated unless there is one.
make_password() {
  local file; file="$(password_file "$1")"
  [ -s "$file" ] && return
  mkdir -p "$SECRETS"
  chmod 700 "$SECRETS"
  (umask 077; head -c 24 /dev/urandom | base64 | tr -d '/+=\n' > "$file")
}
# The storage's directory id (new at every format) and NAME's password's hash.
stamp_of() {
  printf '%s %s\n' "$(sed -n 's/^directory\.id=//p' "$DIR/data/meta.properties" 2>/dev/null)" \
    "$(sha256sum < "$(password_file "$1")" | cut -d' ' -f1)"
}
stamped() { [ "$(cat "$SECRETS/$1.stamp" 2>/dev/null)" = "$(stamp_of "$1")" ]; }
stamp() { (umask 077; stamp_of "$1" > "$SECRETS/$1.stamp"); }
# The users: the services' and admin, and every user a password file was made for.
all_users() {
  local f
  printf '%s\n' "${USERS[@]}"
  for f in "$SECRETS"/*.password; do [ -e "$f" ] && basename "$f" .password; done
  true
}
# Gives the running broker the SCRAM-SHA-512 credential of each user named whose stamp is not
# current (the password the broker has is then not known to be the file's).
# One at a time (tests ask for users in parallel): a lock on $SECRETS/.lock.
ensure_users() {
  local name
  mkdir -p "$SECRETS"
  chmod 700 "$SECRETS"
  exec 9>"$SECRETS/.lock"
  flock 9
  for name in "$@"; do
    valid_user "$name"
    make_password "$name"
    stamped "$name" && continue
    log "creating Kafka user $name (SCRAM-SHA-512)"
    local cfg; cfg="$(mktemp)"
    printf 'SCRAM-SHA-512=password=%s\n' "$(cat "$(password_file "$name")")" > "$cfg"
    run_tool kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$PORT" --alter \
      --add-config-file "$cfg" --entity-type users --entity-name "$name" >/dev/null \
      || { rm -f "$cfg"; die "could not create the Kafka user $name"; }
    rm -f "$cfg"
    stamp "$name"
  done
  exec 9>&-
}
running() { pid >/dev/null && answers || die "Kafka is not running; scripts/kafka.sh start"; }

# --- start / stop --------------------------------------------------------------------------
# The port of the listener named $1 in the configuration the running broker was started with.
running_listener_port() {
  sed -n "s/^listeners=.*$1:\/\/[^,]*:\([0-9][0-9]*\).*/\1/p" "$DIR/server.properties" 2>/dev/null
}

start() {
  if pid >/dev/null; then
    keep_port KAFKA_PORT "$PORT"
    keep_port KAFKA_CONTROLLER_PORT "$CPORT"
    local p
    p="$(running_listener_port SASL_SSL)"; [ -z "$p" ] || keep_port KAFKA_SASL_PORT "$p"
    p="$(running_listener_port SSL)"; [ -z "$p" ] || keep_port KAFKA_SSL_PORT "$p"
  fi
  PORT="$(claim_port KAFKA_PORT 9092)"
  CPORT="$(claim_port KAFKA_CONTROLLER_PORT 9093)"
  SASL_PORT="$(claim_port KAFKA_SASL_PORT 9094)"
  SSL_PORT="$(claim_port KAFKA_SSL_PORT 9095)"
  tls_material
  if pid >/dev/null; then
    if render_config | cmp -s - "$DIR/server.properties"; then
      wait_until_answering
      ensure_users $(all_users)
      return
    fi
    log "restarting Kafka: its configuration changed (listeners, TLS, authorization)"
    stop_broker
  fi
  for port in "$PORT" "$CPORT" "$SASL_PORT" "$SSL_PORT"; do
    port_busy "$port" && die "127.0.0.1:$port is in use by a server this checkout did not start \
(another checkout's stack?); stop it, or set ORSTREAM_KAFKA_PORT / ORSTREAM_KAFKA_CONTROLLER_PORT / \
ORSTREAM_KAFKA_SASL_PORT / ORSTREAM_KAFKA_SSL_PORT, or remove $STATE/ports to have free ports chosen"
  done
  resolve
  config
  if [ ! -f "$DIR/data/meta.properties" ]; then
    format
  fi
  log "starting Kafka on 127.0.0.1:$PORT (SASL_SSL localhost:$SASL_PORT, mutual TLS localhost:$SSL_PORT)"
  nohup "$JAVA" -Xms256m -Xmx1g -XX:+UseG1GC -cp "$LIBS/*" \
    -Dlog4j2.configurationFile="$DIR/log4j2.properties" \
    kafka.Kafka "$DIR/server.properties" >"$DIR/stdout.log" 2>&1 &
  echo $! > "$DIR/pid"
  wait_until_answering
  ensure_users $(all_users)
}

# Formats the storage, with every user's SCRAM credential in its first metadata (so the
# broker starts with them and no tool has to run).
format() {
  log "formatting Kafka storage in $DIR/data"
  local name scram=()
  for name in $(all_users); do
    valid_user "$name"
    make_password "$name"
    scram+=(--add-scram "SCRAM-SHA-512=[name=$name,password=$(cat "$(password_file "$name")")]")
  done
  run_java kafka.tools.StorageTool format -t "orstream-dev-cluster-0001" -c "$DIR/server.properties" \
    --standalone "${scram[@]}" >"$DIR/format.log" 2>&1 \
    || run_java kafka.tools.StorageTool format -t "orstream-dev-cluster-0001" -c "$DIR/server.properties" \
         "${scram[@]}" >"$DIR/format.log" 2>&1 \
    || die "formatting Kafka storage failed, see $DIR/format.log"
  for name in $(all_users); do stamp "$name"; done
}

wait_until_answering() {
  for _ in $(seq 1 120); do
    if answers && port_busy "$SASL_PORT" && port_busy "$SSL_PORT"; then return; fi
    pid >/dev/null || die "Kafka exited at start, see $DIR/server.log and $DIR/stdout.log"
    sleep 0.5
  done
  die "Kafka did not answer on 127.0.0.1:$PORT, $SASL_PORT and $SSL_PORT within 60 s, see $DIR/server.log"
}

stop_broker() {
  local p; p="$(pid)" || return 0
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
  stop) stop_broker ;;
  status) pid >/dev/null && answers ;;
  pause) signal_broker STOP ;;
  resume) signal_broker CONT ;;
  bootstrap) echo "127.0.0.1:$PORT" ;;
  sasl-bootstrap) echo "localhost:$SASL_PORT" ;;
  ssl-bootstrap) echo "localhost:$SSL_PORT" ;;
  user) [ -n "${2:-}" ] || die "usage: scripts/kafka.sh user NAME"; valid_user "$2"; running; ensure_users "$2" ;;
  password) [ -n "${2:-}" ] || die "usage: scripts/kafka.sh password NAME"; valid_user "$2"; running
    ensure_users "$2"; password_file "$2" ;;
  libs) resolve; echo "$LIBS" ;;
  *) die "usage: scripts/kafka.sh start|stop|status|pause|resume|bootstrap|sasl-bootstrap|ssl-bootstrap|user NAME|password NAME|libs" ;;
esac
