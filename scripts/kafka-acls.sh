#!/usr/bin/env bash
# Least-privilege ACLs for the pipeline's three service principals (ingest, infer, sink), made
# with Kafka's own ACL tool (org.apache.kafka.tools.AclCommand, through the Admin API).
#   scripts/kafka-acls.sh [OPTIONS]   add the ACLs (again: adding one that exists changes
#                                     nothing) and print them
#   scripts/kafka-acls.sh --remove    remove exactly those ACLs
# Where:
#   (default)                  this checkout's broker (scripts/kafka.sh start), through its
#                              PLAINTEXT listener, whose clients are super users
#   --bootstrap HOST:PORT      another cluster, a production one
#   --command-config FILE      the admin client's properties for it (security.protocol,
#                              sasl.mechanism, sasl.jaas.config, ssl.truststore.*, ...); its
#                              principal must be allowed to alter ACLs (ALTER on the cluster)
# What:
#   --topic-prefix P           topics of the pipeline (default `or.`): P frames.v1, streams.v1,
#                              results.v1, events.v1, tracks.v1 and their dead letters (.dlq)
#   --group-prefix G           consumer groups (default `orstream-`: orstream-infer, orstream-sink)
#   --transactional-id-prefix T  infer's transactional ids (default `orstream-infer`)
#   --ingest-principal P, --infer-principal P, --sink-principal P
#                              the services' principals (default User:ingest, User:infer,
#                              User:sink): SCRAM user names or certificate common names
#   --only SERVICE             one service's ACLs (ingest, infer or sink)
# Every ACL allows, from any host, on PREFIXED resource patterns (every name that starts with
# the prefix, so test runs with unique topic names are covered):
#   ingest  topics P: READ WRITE DESCRIBE CREATE DESCRIBE_CONFIGS; groups G: READ DESCRIBE
#   infer   topics P: READ WRITE DESCRIBE CREATE DESCRIBE_CONFIGS; groups G: READ DESCRIBE;
#           transactional ids T: WRITE DESCRIBE
#   sink    topics P: READ WRITE DESCRIBE CREATE DESCRIBE_CONFIGS; groups G: READ DESCRIBE
# docs/kafka-security.md says why each is needed.
source "$(dirname "$0")/lib.sh"

usage() { sed -n '2,/^# docs/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }

bootstrap="" command_config="" topic_prefix="or." group_prefix="orstream-"
txn_prefix="orstream-infer" only="" action=--add
ingest="User:ingest" infer="User:infer" sink="User:sink"
while [ $# -gt 0 ]; do
  case "$1" in
    --bootstrap) bootstrap="${2:?--bootstrap HOST:PORT}"; shift ;;
    --command-config) command_config="${2:?--command-config FILE}"; shift ;;
    --topic-prefix) topic_prefix="${2?--topic-prefix P}"; shift ;;
    --group-prefix) group_prefix="${2?--group-prefix G}"; shift ;;
    --transactional-id-prefix) txn_prefix="${2?--transactional-id-prefix T}"; shift ;;
    --ingest-principal) ingest="${2:?--ingest-principal P}"; shift ;;
    --infer-principal) infer="${2:?--infer-principal P}"; shift ;;
    --sink-principal) sink="${2:?--sink-principal P}"; shift ;;
    --only) only="${2:?--only ingest|infer|sink}"; shift ;;
    --remove) action=--remove ;;
    -h|--help) usage 0 ;;
    *) log "unknown option: $1"; usage ;;
  esac
  shift
done
case "$only" in ""|ingest|infer|sink) ;; *) die "--only takes ingest, infer or sink, not $only" ;; esac
for prefix in "$topic_prefix" "$group_prefix" "$txn_prefix"; do
  [ -n "$prefix" ] || die "a prefix must not be empty (an empty prefix would match every name)"
done
for principal in "$ingest" "$infer" "$sink"; do
  [[ "$principal" == ?*:?* ]] || die "a principal is TYPE:NAME, such as User:ingest: $principal"
done
[ -z "$command_config" ] || [ -r "$command_config" ] || die "cannot read $command_config"

if [ -z "$bootstrap" ]; then
  "$ROOT/scripts/kafka.sh" status || die "this checkout's Kafka is not running; scripts/kafka.sh start"
  bootstrap="$("$ROOT/scripts/kafka.sh" bootstrap)"
fi
# Kafka's jars: this stack's, or $ORSTREAM_KAFKA_LIBS (a Kafka installation's libs/).
LIBS="${ORSTREAM_KAFKA_LIBS:-$("$ROOT/scripts/kafka.sh" libs)}"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

# AclCommand: the ACLs of principal $1 with the operations $4... (as the tool spells them:
# Read, Write, Describe, Create, DescribeConfigs) on the resources whose names start with $3
# ($2: --topic, --group or --transactional-id).
acl() {
  local principal="$1" resource=("$2" "$3") ops=() op
  shift 3
  for op in "$@"; do ops+=(--operation "$op"); done
  log "  $principal ${resource[0]#--} ${resource[1]}* (prefixed): $*"
  local extra=()
  [ -z "$command_config" ] || extra+=(--command-config "$command_config")
  [ "$action" = --add ] || extra+=(--force)
  "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$LIBS/*" \
    -Dlog4j2.configurationFile="$ROOT/scripts/kafka/tools-log4j2.properties" \
    org.apache.kafka.tools.AclCommand --bootstrap-server "$bootstrap" "${extra[@]}" "$action" \
    --allow-principal "$principal" "${ops[@]}" --resource-pattern-type prefixed "${resource[@]}" \
    || die "Kafka's AclCommand failed ($action $principal on ${resource[*]})"
}

verb="adding"; [ "$action" = --add ] || verb="removing"
if [ -z "$only" ] || [ "$only" = ingest ]; then
  log "$verb the ACLs of ingest ($ingest) on $bootstrap"
  # Produces frames and stream lifecycle events; creates its topics with a retention and
  # reads the retention back. With rooms: keeps their state on the site topic and reads it
  # back at start (and a camera's last frame after a restart), each read in a group of its own.
  acl "$ingest" --topic "$topic_prefix" Read Write Describe Create DescribeConfigs
  acl "$ingest" --group "$group_prefix" Read Describe
fi
if [ -z "$only" ] || [ "$only" = infer ]; then
  log "$verb the ACLs of infer ($infer) on $bootstrap"
  # Consumes frames; produces results and dead letters in transactions, creating the topics.
  acl "$infer" --topic "$topic_prefix" Read Write Describe Create DescribeConfigs
  # Its consumer group: joins, commits offsets inside its transactions, lists the members.
  acl "$infer" --group "$group_prefix" Read Describe
  acl "$infer" --transactional-id "$txn_prefix" Write Describe
fi
if [ -z "$only" ] || [ "$only" = sink ]; then
  log "$verb the ACLs of sink ($sink) on $bootstrap"
  # Consumes results and stream events; publishes events, tracks and dead letters.
  acl "$sink" --topic "$topic_prefix" Read Write Describe Create DescribeConfigs
  acl "$sink" --group "$group_prefix" Read Describe
fi
