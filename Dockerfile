# The gateway's image: a static binary on a distroless base, run as a
# non-root user, that checks its own health (the base has no shell, curl
# or wget). See docs/deploy.md.
#
#   docker build -t tslm .
#   docker build --build-arg GO_VERSION=1.26.8 -t tslm .
#   docker build --build-arg RUNTIME_IMAGE=registry.example/distroless/static:nonroot -t tslm .
#
# Base images and the Go version are build arguments, so that a mirror or a
# pinned digest needs no edit here. BUILD_IMAGE defaults to the official Go
# image of GO_VERSION.
ARG GO_VERSION=1.26
ARG BUILD_IMAGE=golang:${GO_VERSION}
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
# The modules first, in their own layer: a change of code alone does not
# download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static (no cgo): the runtime image has no C library.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/tslm ./cmd/tslm

FROM ${RUNTIME_IMAGE}
ARG RUNTIME_IMAGE
# Set by a release build; "dev" and "unknown" otherwise.
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="tslm" \
      org.opencontainers.image.description="TSLM gateway: WebSocket and SSE fan-out of Redis streams, with replay" \
      org.opencontainers.image.source="https://github.com/tslm/tslm" \
      org.opencontainers.image.documentation="https://github.com/tslm/tslm/blob/main/docs/deploy.md" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"
COPY --from=build /out/tslm /tslm
# distroless's "nonroot" user, by number, so that a runtime that refuses
# root images (Kubernetes' runAsNonRoot) can tell without an /etc/passwd,
# and so that another RUNTIME_IMAGE runs as non-root too.
USER 65532:65532
# 8080: the public listener (WebSocket, SSE, demo page). 8081: the
# internal one (publish API, /readyz, /metrics), never to be published
# beyond a private network. Both need TSLM_*_ADDRS on every interface,
# as docker-compose.yml sets them: the internal one defaults to loopback.
EXPOSE 8080 8081
# Alive, not ready: a replica whose Redis is down stays up and serves
# again once Redis is back; the balancer asks /readyz itself. The check
# reads the container's TSLM_* variables, as the gateway does.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["/tslm", "healthcheck"]
ENTRYPOINT ["/tslm"]
