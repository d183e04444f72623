# syntax=docker/dockerfile:1
# Chronik's two images from one build:
#
#   docker build --target broker   -t chronik-broker:0.1.0 .
#   docker build --target operator -t chronik-operator:0.1.0 .
#
# Both run a stripped binary as PID 1, as the non-root user 65532, on Debian 12's
# distroless C/C++ runtime (glibc, libgcc, libstdc++: what RocksDB's C++ needs, and no
# shell). The broker keeps everything it writes under /var/lib/chronik (the volume) and
# runs with a read-only root filesystem. `make images` builds the same content without a
# Docker engine (images/build.sh) for the local Kubernetes node.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler clang libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The version the binaries report (ApiVersions' software version, metrics, status).
ARG CHRONIK_VERSION=""
ENV CHRONIK_BUILD_VERSION=${CHRONIK_VERSION}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin chronik-broker --bin chronik-operator \
 && mkdir -p /out \
 && cp target/release/chronik-broker target/release/chronik-operator /out/ \
 && strip /out/chronik-broker /out/chronik-operator

FROM gcr.io/distroless/cc-debian12:nonroot AS broker
COPY --from=build /out/chronik-broker /usr/local/bin/chronik-broker
USER 65532:65532
ENV CHRONIK_DATA_DIR=/var/lib/chronik
VOLUME /var/lib/chronik
# Kafka, cluster gRPC, metrics and health.
EXPOSE 9092 9093 9644
ENTRYPOINT ["/usr/local/bin/chronik-broker"]

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/chronik-operator /usr/local/bin/chronik-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/chronik-operator"]
