# syntax=docker/dockerfile:1
# Switchyard container image: a statically linked binary in an empty
# (`scratch`) image, run as a non-root user. Build: `docker build -t switchyard .`
# Run:  docker run -p 8080:8080 -v $PWD/switchyard.toml:/etc/switchyard/switchyard.toml:ro \
#         -e OPENAI_API_KEY switchyard
# The config must listen on 0.0.0.0:8080 (or change EXPOSE and the HEALTHCHECK
# URL to match). scripts/check-deploy.sh lints this file and builds the
# runtime stage offline from a host-built binary.

ARG RUST_VERSION=1.95
ARG RUST_TARGET=x86_64-unknown-linux-gnu

FROM rust:${RUST_VERSION}-bookworm AS build
ARG RUST_TARGET
WORKDIR /src
COPY . .
# glibc linked statically (crt-static), so the image needs no libc; an
# explicit --target keeps the flag off build scripts and proc macros. No
# OpenSSL anywhere (rustls + ring), so nothing else is linked dynamically.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --target "${RUST_TARGET}" --bin switchyard \
    && cp "target/${RUST_TARGET}/release/switchyard" /switchyard \
    && sh deploy/docker/rootfs.sh /switchyard /etc/ssl/certs/ca-certificates.crt /image

FROM scratch AS runtime
COPY --from=build /image/rootfs/ /
COPY --from=build --chown=65532:65532 /image/data /var/lib/switchyard
USER 65532:65532
# The working directory is the data directory: the default
# `[store] url = "sqlite://switchyard.db"` lands here. Mount a volume on it
# (or use PostgreSQL) to keep keys and the request log across restarts.
WORKDIR /var/lib/switchyard
EXPOSE 8080
# The gateway drains on SIGTERM (drain_delay, then drain_timeout); give
# `docker stop -t` more than both.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/switchyard", "healthcheck", "--url", "http://127.0.0.1:8080/healthz", "--timeout", "2s"]
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["serve", "--config", "/etc/switchyard/switchyard.toml"]
