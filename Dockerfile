# syntax=docker/dockerfile:1
#
# The orstream image: the `orstream` binary with libtorch from the pinned torch wheel
# (scripts/requirements.txt) and GStreamer from Debian bookworm.
#
# The build links libtorch from the venv and records an rpath to it (.venv/torch/lib under the
# build directory, see infer/build_support/torch_link.rs), so both stages use the same absolute
# directory, /opt/orstream, and the runtime stage gets the venv's packages at that path.
#
#   docker build -t orstream:dev .
#   docker run --rm orstream:dev infer --check --model models/demo/seg.pt

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build

ENV DEBIAN_FRONTEND=noninteractive
# What scripts/install-packages.sh installs for building, less the local stack's servers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential pkg-config cmake \
      libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev \
      libgstrtspserver-1.0-dev \
      libcurl4-openssl-dev libssl-dev libsasl2-dev libzstd-dev zlib1g-dev \
      python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/orstream

# The venv first: the slowest layer, rebuilt only when scripts/ (the pinned requirements) change.
COPY scripts/ scripts/
RUN --mount=type=cache,target=/root/.cache/pip \
    scripts/install-python.sh

COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/opt/orstream/target \
    cargo build --release --locked --bin orstream \
 && install -D -m 0755 target/release/orstream /opt/orstream/bin/orstream

# ---------------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

ENV DEBIAN_FRONTEND=noninteractive
# GStreamer and its plugins (demuxers, decoders incl. libav, JPEG, RTSP), the C libraries the
# binary links (librdkafka's TLS, SASL, curl, zstd, zlib), curl for health checks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates curl \
      libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 libgstreamer-plugins-bad1.0-0 \
      gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
      gstreamer1.0-libav \
      libssl3 libsasl2-2 libsasl2-modules libcurl4 libzstd1 zlib1g libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/orstream

# libtorch (and, for CUDA, the NVIDIA libraries it loads from the neighbouring wheels) at the
# path the binary's rpath names: /opt/orstream/.venv/torch/lib.
COPY --from=build /opt/orstream/.venv/lib/ /opt/orstream/.venv/lib/
RUN torch="$(find /opt/orstream/.venv/lib -maxdepth 3 -type d -path '*/site-packages/torch')" \
 && test -f "$torch/lib/libtorch_cpu.so" \
 && ln -s "$torch" /opt/orstream/.venv/torch

COPY --from=build /opt/orstream/bin/orstream /usr/local/bin/orstream
COPY models/demo/ /opt/orstream/models/demo/
COPY config/ /opt/orstream/config/

# An unprivileged user whose home takes GStreamer's plugin registry cache; the working
# directory is writable too, for records written to relative paths (sqlite://record.db).
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/orstream \
      --shell /usr/sbin/nologin orstream \
 && chown orstream /opt/orstream
USER orstream

# Every service serves /metrics, /healthz and /readyz here when telemetry.metrics_listen is set
# (ORSTREAM_<SERVICE>_TELEMETRY__METRICS_LISTEN).
EXPOSE 9464
ENTRYPOINT ["orstream"]
CMD ["--help"]
