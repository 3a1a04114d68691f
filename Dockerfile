# Build stage: Swift toolchain plus the C libraries the service wraps.
FROM swift:6.3-bookworm AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libhiredis-dev libmongoc-dev libbson-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
COPY Sources ./Sources
COPY Tests ./Tests
RUN swift build -c release --product notifications --static-swift-stdlib \
    && cp "$(swift build -c release --show-bin-path)/notifications" /notifications

# Run stage: only the runtime libraries.
FROM debian:bookworm-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libhiredis0.14 libmongoc-1.0-0 libbson-1.0-0 ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 notifications
COPY --from=build /notifications /usr/local/bin/notifications
COPY config /app/config
WORKDIR /app
USER notifications
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/health/live || exit 1
# SIGTERM drains in-flight requests (SHUTDOWN_GRACE_SECONDS) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["notifications"]
CMD ["serve"]
