#!/usr/bin/env bash
# The secrets of the docker-compose stack, made once per installation into deploy/secrets/
# (ignored by git; the directory is mode 700), or into DIR:
#   scripts/compose-secrets.sh [DIR]
# Each file is named as the compose secret it is (mounted at /run/secrets/<name>):
# - ca: the stack's own CA certificate (its key, ca.key, is never handed to a container);
# - kafka-pem: the broker's key and certificate (host names kafka, localhost, 127.0.0.1);
# - postgres-crt, postgres-key: PostgreSQL's (postgres, localhost, 127.0.0.1);
# - postgres-password, kafka-admin-password, kafka-ingest-password, kafka-infer-password,
#   kafka-sink-password: random passwords (the SCRAM users are made with them when the
#   broker's storage is formatted, at its first start);
# - sink-store: the sink's store URL: the password, sslmode=verify-full, the CA;
# - kafka-admin-properties: the admin's client settings, for the ACL tool.
# What exists is kept. To change a password later, change it on the server too (Kafka:
# kafka-configs --alter --add-config SCRAM-SHA-512=...; PostgreSQL: ALTER ROLE).
# The files are readable by the containers' users (compose hands file secrets as bind mounts,
# with their mode): keep the directory private.
source "$(dirname "$0")/lib.sh"
DIR="${1:-$ROOT/deploy/secrets}"
mkdir -p "$DIR"
chmod 700 "$DIR"
DIR="$(cd "$DIR" && pwd)"

export ORSTREAM_TLS_DIR="$DIR"
"$ROOT/scripts/tls.sh" server kafka kafka localhost 127.0.0.1 >/dev/null
"$ROOT/scripts/tls.sh" server postgres postgres localhost 127.0.0.1 >/dev/null
[ -s "$DIR/ca" ] || cp "$DIR/ca.crt" "$DIR/ca"
[ -s "$DIR/kafka-pem" ] \
  || cat "$DIR/server-kafka.key" "$DIR/server-kafka.crt" "$DIR/ca.crt" > "$DIR/kafka-pem"
[ -s "$DIR/postgres-crt" ] || cp "$DIR/server-postgres.crt" "$DIR/postgres-crt"
[ -s "$DIR/postgres-key" ] || cp "$DIR/server-postgres.key" "$DIR/postgres-key"

# Letters and digits only: they go into a URL and a JAAS line unquoted.
password() {
  local file="$DIR/$1"
  [ -s "$file" ] || head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 32 > "$file"
}
for name in postgres-password kafka-admin-password kafka-ingest-password \
  kafka-infer-password kafka-sink-password; do
  password "$name"
done
[ -s "$DIR/sink-store" ] || printf 'postgres://orstream:%s@postgres:5432/orstream?sslmode=verify-full&sslrootcert=/run/secrets/ca' \
  "$(cat "$DIR/postgres-password")" > "$DIR/sink-store"
[ -s "$DIR/kafka-admin-properties" ] || cat > "$DIR/kafka-admin-properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(cat "$DIR/kafka-admin-password")";
ssl.truststore.type=PEM
ssl.truststore.location=/run/secrets/ca
PROPS
chmod 644 "$DIR"/*
chmod 600 "$DIR/ca.key"
echo "$DIR"
