#!/usr/bin/env bash
# Generates the Python classes of the wire contract (proto/proto/orstream/v1/orstream.proto)
# into DIR (default examples/python/generated), with the protoc that grpcio-tools carries, so
# they match the venv's protobuf. Usage: scripts/python-contract.sh [DIR]
source "$(dirname "$0")/lib.sh"
"$ROOT/scripts/install-python.sh"
out="${1:-$ROOT/examples/python/generated}"
mkdir -p "$out"
"$ROOT/.venv/bin/python" -m grpc_tools.protoc -I "$ROOT/proto/proto" --python_out="$out" \
  orstream/v1/orstream.proto
touch "$out/orstream/__init__.py" "$out/orstream/v1/__init__.py"
