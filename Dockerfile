# relayq: one image holding both programs; the command chooses (`producer` or `consumer`).
#
#   docker build -t relayq .
#   docker run --rm -p 5000:5000 -e RABBITMQ_HOST=rabbitmq relayq producer
#   docker run --rm -e RABBITMQ_HOST=rabbitmq -e HEALTH_PORT=8000 relayq consumer
#
# Build stage: Debian 12 with the -dev packages, a Release build (warnings are errors).
FROM debian:bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config \
      librabbitmq-dev libmicrohttpd-dev libjansson-dev uuid-dev libcurl4-openssl-dev \
      python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY common ./common
COPY producer ./producer
COPY consumer ./consumer
COPY tools ./tools
# docs/openapi.json and producer/rt/viewer.html are compiled in (scripts/gen-assets.py)
COPY docs ./docs
COPY scripts/gen-assets.py ./scripts/gen-assets.py
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DRQ_WERROR=ON -DRQ_TESTS=OFF \
 && cmake --build /build -j"$(nproc)" --target producer consumer \
 && strip /build/bin/producer /build/bin/consumer

# Runtime stage: only the shared libraries the programs link or load (the consumer loads
# libcurl for HANDLER=http(s)://...), curl for the HEALTHCHECK. The apt caches go too (pkgcache.bin and
# srcpkgcache.bin are 80 MB when the base image does not drop them itself).
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      librabbitmq4 libmicrohttpd12 libjansson4 libuuid1 libcurl4 curl ca-certificates \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && groupadd --system --gid 10001 relayq \
 && useradd --system --uid 10001 --gid relayq --home-dir /nonexistent --shell /usr/sbin/nologin relayq \
 && mkdir -p /data \
 && chown relayq:relayq /data
COPY --from=build /build/bin/producer /build/bin/consumer /usr/local/bin/
# GET /docs serves Swagger UI from /usr/share/relayq/swagger-ui (DOCS_UI_DIR): the image does
# not carry it (no registry at build time); mount npm's swagger-ui-dist there to turn it on,
# else /docs answers 503 saying so. /openapi.json and /viewer are compiled in.

# Containers listen on every interface of their own network namespace; the ports are only
# published where docker-compose.yml says so. HEALTH_PORT: 5000 (producer) or 8000 (consumer).
ENV PRODUCER_BIND=0.0.0.0 \
    CONSUMER_BIND=0.0.0.0 \
    HEALTH_PORT=5000
# /data holds the shared input (tailed) and output files; a named volume mounted there starts
# owned by the relayq user because the image's folder is.
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 5000 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS -o /dev/null "http://127.0.0.1:${HEALTH_PORT}/health/live" || exit 1
STOPSIGNAL SIGTERM
CMD ["producer"]
