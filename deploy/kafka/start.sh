#!/bin/bash
# The compose stack's broker: formats its storage at the first start, with the SCRAM-SHA-512
# users admin, ingest, infer and sink made from the passwords in /run/secrets (compose
# secrets, scripts/compose-secrets.sh), then runs Kafka on $KAFKA_PROPERTIES.
set -euo pipefail
props="${KAFKA_PROPERTIES:?}"
scram=()
for user in admin ingest infer sink; do
  scram+=(--add-scram "SCRAM-SHA-512=[name=$user,password=$(cat "/run/secrets/kafka-$user-password")]")
done
/opt/kafka/bin/kafka-storage.sh format --ignore-formatted -t "${CLUSTER_ID:?}" -c "$props" "${scram[@]}" >/dev/null
exec /opt/kafka/bin/kafka-server-start.sh "$props"
