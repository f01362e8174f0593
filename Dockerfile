# syntax=docker/dockerfile:1
#
# Multi-stage build of the `ledger` binary.
#   docker build -t ledger .
#   docker run --rm -p 8080:8080 -e DATABASE_URL=... -e NATS_URL=... ledger serve

# ---- build ----
FROM rust:1-bookworm AS builder
WORKDIR /src
# build.rs builds the pages (web/) with Node 20 and npm, taken from the official Node image.
COPY --from=node:20-bookworm-slim /usr/local/bin/node /usr/local/bin/node
COPY --from=node:20-bookworm-slim /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s /usr/local/lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
# sqlx compile-time checked queries (if any) use the committed .sqlx/ data
# instead of a live database during the image build.
ENV SQLX_OFFLINE=true
COPY . .
# Cache mounts keep the registry and target dir between builds; the binary is
# copied out of the cached target dir so it lands in the image layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ledger \
 && install -D -m 0755 target/release/ledger /out/ledger

# ---- runtime ----
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 ledger \
 && useradd --system --uid 10001 --gid ledger --home-dir /var/lib/ledger --create-home --shell /usr/sbin/nologin ledger
COPY --from=builder /out/ledger /usr/local/bin/ledger
USER ledger:ledger
WORKDIR /var/lib/ledger
# Inside a container the service must listen on all interfaces (the binary's
# own default is 127.0.0.1:8080).
ENV LEDGER_BIND=0.0.0.0:8080
EXPOSE 8080
STOPSIGNAL SIGTERM
ENTRYPOINT ["ledger"]
CMD ["serve"]
