#!/usr/bin/env bash
# Installs the Debian packages the build and the tests need (prometheus for promtool, which
# scripts/promtool-check.sh runs), and the image's runtime packages
# (deploy/image/runtime-packages.txt), whose files tests/image_runtime.rs looks at. Quiet when
# all are present.
source "$(dirname "$0")/lib.sh"
PKGS=(
  build-essential pkg-config cmake curl
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-libav gstreamer1.0-tools libgstrtspserver-1.0-dev
  protobuf-compiler
  libcurl4-openssl-dev libssl-dev libsasl2-dev libzstd-dev zlib1g-dev openssl
  postgresql postgresql-contrib
  openjdk-17-jre-headless maven
  python3-venv procps
  prometheus
  chromium chromium-driver
)
while read -r p; do PKGS+=("$p"); done < <(grep -v '^#' "$ROOT/deploy/image/runtime-packages.txt" | grep .)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
log "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
as_root apt-get update -qq
as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
