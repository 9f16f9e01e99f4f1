#!/usr/bin/env bash
# Creates the project's Python venv (.venv, ignored by git) holding the pinned torch and
# torchvision wheels from PyPI. libtorch for the Rust build (tch) comes from this torch.
# Quiet when the venv already holds the pinned versions.
source "$(dirname "$0")/lib.sh"
VENV="$ROOT/.venv"
REQ="$ROOT/scripts/requirements.txt"
stamp="$VENV/.orstream-requirements"
# .venv/torch -> the torch package: the stable libtorch path .cargo/config.toml gives the build
# (LIBTORCH), whatever the Python minor version.
link_torch() {
  [ -e "$VENV/torch/lib/libtorch_cpu.so" ] && return
  local dir
  dir="$("$VENV/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')" \
    || die "torch is not importable from .venv"
  ln -sfn "$dir" "$VENV/torch"
}
if [ -f "$stamp" ] && cmp -s "$stamp" "$REQ"; then link_torch; exit 0; fi
PY="${ORSTREAM_PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || { log "creating Python venv in .venv"; "$PY" -m venv "$VENV"; }
log "installing Python requirements (torch wheels are large; this runs once per machine)"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
cp "$REQ" "$stamp"
link_torch
