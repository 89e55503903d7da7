# syntax=docker/dockerfile:1
# wardgate container image: multi-stage, small, non-root.
#   docker build --build-arg WARDGATE_RELEASE=$(git rev-parse --short=12 HEAD) \
#     -t registry.example.org/wardgate/wardgate:$(git describe --tags --always) .
# WARDGATE_RELEASE is the release label every answer carries (X-Wardgate-Version) and
# /metrics exports (wardgate_build_info{revision}): the build context holds no .git.
# Runtime: Debian slim (glibc, CA roots, /bin/sleep for the pod's preStop hook), uid/gid 10001,
# read-only root file system friendly (writes nothing).

ARG RUST_VERSION=1
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
ARG WARDGATE_RELEASE=unknown
ENV WARDGATE_RELEASE=${WARDGATE_RELEASE}
COPY . .
# The product binary only: no default features, so no demo and no sample-backend code in it.
# Cache mounts keep the registry and target/ between builds; the binary is copied out of the
# cache before the step ends. --locked: build exactly Cargo.lock.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p wardgate --no-default-features --bin wardgate \
 && install -D -m 0755 target/release/wardgate /out/wardgate

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 wardgate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin wardgate
COPY --from=build /out/wardgate /usr/local/bin/wardgate
# Default config (the annotated reference); Kubernetes mounts its ConfigMap over this file.
COPY config/wardgate.toml /etc/wardgate/wardgate.toml
USER 10001:10001
# 8080 app traffic, 9090 admin (/healthz, /readyz, /metrics).
EXPOSE 8080 9090
ENV WARDGATE_LOG_FORMAT=json
# SIGTERM starts the drain (readyz 503, grace, then shutdown_timeout).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/wardgate"]
CMD ["serve", "--config", "/etc/wardgate/wardgate.toml"]
