# syntax=docker/dockerfile:1
#
# The orstream image: the `orstream` binary, the libtorch libraries it needs (no Python venv),
# torchvision's operator library for Mask R-CNN models, and GStreamer from Debian bookworm.
#
#   docker build -t orstream:dev .                                     # CPU (the default)
#   docker build -t orstream:dev-cuda --build-arg TORCH_VARIANT=cu130 .   # CUDA 13.0
#   docker run --rm orstream:dev infer --check --config config/maskrcnn-check.toml
#
# Two stages. The build stage installs the pinned torch and torchvision wheels
# (scripts/requirements.txt) of TORCH_VARIANT from PyTorch's wheel index, builds the binary
# against that libtorch and makes the runtime tree with scripts/image-runtime.sh: the binary
# and exactly the wheel libraries it, libtorch_python and torchvision's operators ask for (for
# CUDA, the NVIDIA wheels' libraries too). The runtime stage is Debian slim with the packages
# of deploy/image/runtime-packages.txt and that tree at /opt/orstream (libraries in
# /opt/orstream/lib, the image's LD_LIBRARY_PATH). tests/image_runtime.rs checks with ldd that
# the tree and those packages hold every library asked for, and that a Mask R-CNN model loads
# from them. The CPU image's target is under 1.5 GB; scripts/compose-smoke.sh prints and
# checks it. The CUDA image needs the NVIDIA container toolkit, which mounts the driver.

ARG RUST_VERSION=1.95.0
ARG DEBIAN_RELEASE=bookworm

# ---------------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build

ENV DEBIAN_FRONTEND=noninteractive
# What scripts/install-packages.sh installs for building, less the local stack's servers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential pkg-config cmake binutils \
      libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev \
      libgstrtspserver-1.0-dev protobuf-compiler \
      libcurl4-openssl-dev libssl-dev libsasl2-dev libzstd-dev zlib1g-dev \
      python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/orstream

# cpu, or a CUDA build of PyTorch's index (cu130 matches the PyPI wheels the project tests).
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/${TORCH_VARIANT}

# The wheels first: the slowest layer, rebuilt only when the pinned versions change.
COPY scripts/requirements.txt /opt/build/requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/build/venv \
 && /opt/build/venv/bin/pip install --disable-pip-version-check --index-url "$TORCH_INDEX" \
      $(grep -E '^(torch|torchvision)==' /opt/build/requirements.txt)

COPY . .
# torch-sys and infer/build_support/torch_link.rs ask this venv's python where libtorch is.
ENV LIBTORCH_USE_PYTORCH=1 VIRTUAL_ENV=/opt/build/venv PATH=/opt/build/venv/bin:$PATH
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/opt/orstream/target \
    cargo build --release --locked --bin orstream \
 && scripts/image-runtime.sh --python /opt/build/venv/bin/python \
      --binary target/release/orstream --out /opt/runtime

# ---------------------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime

ENV DEBIAN_FRONTEND=noninteractive
COPY deploy/image/runtime-packages.txt /tmp/runtime-packages.txt
RUN apt-get update \
 && grep -v '^#' /tmp/runtime-packages.txt | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/* /tmp/runtime-packages.txt

WORKDIR /opt/orstream
COPY --from=build /opt/runtime/bin/orstream /usr/local/bin/orstream
COPY --from=build /opt/runtime/lib/ /opt/orstream/lib/
COPY --from=build /opt/runtime/MANIFEST /opt/orstream/MANIFEST
ENV LD_LIBRARY_PATH=/opt/orstream/lib
COPY models/demo/ /opt/orstream/models/demo/
COPY models/fixtures/tiny_maskrcnn.pt models/fixtures/tiny_maskrcnn.toml /opt/orstream/models/fixtures/
COPY config/ /opt/orstream/config/
COPY deploy/image/maskrcnn-check.toml /opt/orstream/config/maskrcnn-check.toml

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
