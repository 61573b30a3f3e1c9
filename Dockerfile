# One image with the Switchboard binaries (ingest, transform, loader, simulate); the
# compose file picks the binary with `command`. Built from the same workspace and lock
# file as the native tests (scripts/test.sh checks the lists match).
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p ingest -p transform -p loader -p simulate \
    && mkdir -p /out \
    && cp target/release/ingest target/release/transform target/release/loader target/release/simulate /out/

FROM debian:12.10-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home switchboard \
    && mkdir -p /var/lib/switchboard/spool \
    && chown -R switchboard /var/lib/switchboard
COPY --from=build /out/ /usr/local/bin/
USER switchboard
ENV LOG_FORMAT=json
CMD ["ingest", "--help"]
