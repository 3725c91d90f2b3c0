# Multi-stage build of the gateway: a static binary on a distroless base.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/tslm ./cmd/tslm

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/tslm /tslm
EXPOSE 8080 8081
ENTRYPOINT ["/tslm"]
