#!/usr/bin/env bash
# The runtime file tree of the orstream image: the binary and exactly the libraries of the
# torch and torchvision wheels it needs, without Python packages or anything else of the venv.
# The Dockerfile's build stage runs it and the runtime stage copies the tree; the image test
# (tests/image_runtime.rs) runs it here and checks the tree with ldd.
#   scripts/image-runtime.sh --binary FILE --out DIR [--python PY] [--link]
# Where:
#   --binary FILE   the orstream binary (target/release/orstream)
#   --out DIR       the tree to make (emptied first): DIR/bin/orstream, DIR/lib/ (flat, the
#                   image's LD_LIBRARY_PATH), DIR/lib/torchvision/_C.so (torchvision's
#                   operators, for Mask R-CNN models: model.torchvision_ops), DIR/MANIFEST
#   --python PY     the Python whose torch and torchvision are taken (default: .venv's, else
#                   python3)
#   --link          hard-link the files instead of copying them (a check of the list, not an
#                   image; DIR must be on the venv's file system)
# What goes in: every library the binary, libtorch_python.so (which torchvision's operators
# need) and torchvision/_C.so ask for (DT_NEEDED, followed to the end) that one of the wheels
# holds: torch/lib, torch.libs, torchvision.libs and, for a CUDA build, the NVIDIA wheels. An
# NVIDIA wheel's lib/ comes whole once one of its libraries is asked for, because cuDNN, NVRTC
# and NCCL open parts of themselves at run time (less the plugins of optional_plugin below). A library no wheel holds must be the system's:
# the image's Debian packages (deploy/image/runtime-packages.txt) provide it; one the system
# here lacks too stops the script, naming it and who asked for it. libcuda.so.1 is the GPU
# driver's, which the container runtime mounts.
source "$(dirname "$0")/lib.sh"

usage() { sed -n '2,/^source/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2; exit "${1:-2}"; }

binary="" out="" python="" link=0
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="${2:?--binary FILE}"; shift ;;
    --out) out="${2:?--out DIR}"; shift ;;
    --python) python="${2:?--python PY}"; shift ;;
    --link) link=1 ;;
    -h|--help) usage 0 ;;
    *) log "unknown option: $1"; usage ;;
  esac
  shift
done
[ -n "$binary" ] && [ -n "$out" ] || usage
[ -x "$binary" ] || die "no executable binary at $binary"
if [ -z "$python" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then python="$ROOT/.venv/bin/python"; else python=python3; fi
fi
command -v readelf >/dev/null || die "readelf (binutils) is needed"

site="$("$python" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')" \
  || die "torch is not importable by $python"
[ -f "$site/torch/lib/libtorch_cpu.so" ] || die "no libtorch_cpu.so under $site/torch/lib"
ops="$site/torchvision/_C.so"
[ -f "$ops" ] || die "no torchvision operator library at $ops"

# Where the wheels keep shared libraries.
wheel_dirs=("$site/torch/lib")
for dir in "$site/torch.libs" "$site/torchvision.libs" "$site"/nvidia/*/lib; do
  [ -d "$dir" ] && wheel_dirs+=("$dir")
done

# The system's libraries by soname (the dynamic loader's cache).
declare -A system=()
while read -r name path; do
  system["$name"]="$path"
done < <(/sbin/ldconfig -p | awk '/ => / { print $1, $NF }')

rm -rf "$out"
mkdir -p "$out/bin" "$out/lib/torchvision"
place() { # place SOURCE DEST
  if [ "$link" = 1 ]; then ln "$(readlink -f "$1")" "$2"; else cp -L "$1" "$2"; fi
}

# Plugins of NVIDIA wheels for hardware and clusters the image does not serve: NVSHMEM's
# network transports and its MPI, PMIx and shared-memory launchers, cuFile's RDMA. They are
# opened only when configured for those, and need libraries (MPI, UCX, libfabric, rdma-core)
# the image does not hold.
optional_plugin() {
  case "$1" in
    nvshmem_transport_*|nvshmem_bootstrap_mpi.*|nvshmem_bootstrap_pmix.*|nvshmem_bootstrap_shmem.*|libcufile_rdma.*) return 0 ;;
    *) return 1 ;;
  esac
}

declare -A placed=() whole=()
queue=()
# take FILE: puts a wheel's library into lib/ (once) and queues it.
take() {
  local file="$1" name
  name="$(basename "$file")"
  [ -n "${placed[$name]:-}" ] && return
  placed["$name"]=1
  place "$file" "$out/lib/$name"
  queue+=("$file")
  local dir
  dir="$(dirname "$file")"
  if [[ "$dir" == "$site"/nvidia/* ]] && [ -z "${whole[$dir]:-}" ]; then
    whole["$dir"]=1
    local member
    for member in "$dir"/*.so*; do
      if [ -f "$member" ] && ! optional_plugin "$(basename "$member")"; then take "$member"; fi
    done
  fi
}
# find_in_wheels SONAME: the wheel file of that name, if any.
find_in_wheels() {
  local dir
  for dir in "${wheel_dirs[@]}"; do
    [ -f "$dir/$1" ] && { echo "$dir/$1"; return 0; }
  done
  return 1
}

place "$binary" "$out/bin/orstream"
place "$ops" "$out/lib/torchvision/_C.so"
take "$site/torch/lib/libtorch_python.so"
queue+=("$binary" "$ops")
missing=()
while [ ${#queue[@]} -gt 0 ]; do
  file="${queue[0]}"
  queue=("${queue[@]:1}")
  while read -r needed; do
    [ -n "${placed[$needed]:-}" ] && continue
    if found="$(find_in_wheels "$needed")"; then
      take "$found"
    elif [ -n "${system[$needed]:-}" ] || [ "$needed" = libcuda.so.1 ]; then
      continue
    else
      missing+=("$needed (asked for by $(basename "$file"))")
    fi
  done < <(readelf -d "$file" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
done
[ ${#missing[@]} -eq 0 ] || die "libraries found neither in the wheels nor on this system: ${missing[*]}"

(cd "$out" && find . -mindepth 1 \( -type f -o -type l \) ! -name MANIFEST -printf '%P\n' | LC_ALL=C sort) > "$out/MANIFEST"
size="$(du -shL "$out" | cut -f1)"
log "runtime tree in $out: $(($(wc -l < "$out/MANIFEST"))) files, $size"
