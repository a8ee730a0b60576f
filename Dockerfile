# The nodegress image: one static binary on an empty base. The datapath's
# BPF objects are embedded in it by bpf2go, so nothing else is needed.
#
#   docker build -t ghcr.io/nodegress/nodegress:TAG --build-arg VERSION=TAG .
#
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 ...
# cross-compiles on the build machine's architecture.

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
# Modules first, so editing the sources does not download them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
# CGO off: a static binary that runs on scratch. -trimpath keeps the build
# machine's paths out of the binary.
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags "-s -w -X main.version=$VERSION" \
    -o /out/nodegress ./cmd/nodegress

FROM scratch
COPY --from=build /out/nodegress /nodegress
ENTRYPOINT ["/nodegress"]
