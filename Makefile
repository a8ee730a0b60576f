# The make targets are the project's interface; README.md explains them.
SHELL := /bin/bash
GO ?= go
BIN := bin
GOTEST_FLAGS ?= -count=1 -timeout 30m
# e2e tests run exactly the binaries make built.
TEST_ENV := NODEGRESS_BIN=$(CURDIR)/$(BIN)/nodegress PODSERVER_BIN=$(CURDIR)/$(BIN)/podserver \
	KUBECTL_NODEGRESS_BIN=$(CURDIR)/$(BIN)/kubectl-nodegress

.PHONY: all build deps generate check-generated kube-bins test unit e2e e2e-upstream conformance demo lint bench cluster cluster-down demo-cluster clean

all: build

deps:
	@scripts/install-deps.sh

build:
	$(GO) build -o $(BIN)/nodegress ./cmd/nodegress
	$(GO) build -o $(BIN)/kubectl-nodegress ./cmd/kubectl-nodegress
	$(GO) build -o $(BIN)/podserver ./tests/cmd/podserver

# The Kubernetes binaries (control plane, kubelet, kube-proxy, kubectl),
# etcd and agnhost built from Go modules and cached (minutes the first
# time, instant after).
kube-bins:
	@scripts/kube-bins.sh >/dev/null

generate: deps
	cd loader && $(GO) generate ./...

check-generated: deps
	@scripts/check-generated.sh

lint: deps
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags bench ./...
	clang-format --dry-run -Werror bpf/*.c bpf/lib/*.h

# Everything: the fuzz targets for a bounded time (scripts/fuzz.sh), unit
# tests, BPF_PROG_TEST_RUN tables, e2e in network namespaces. Tests
# needing root skip when run without it, except under CI.
test: deps check-generated lint build kube-bins
	@GO=$(GO) scripts/h2spec.sh
	GO=$(GO) scripts/fuzz.sh
	$(TEST_ENV) $(GO) test $(GOTEST_FLAGS) ./...

unit: deps
	@GO=$(GO) scripts/h2spec.sh
	$(GO) test $(GOTEST_FLAGS) $$($(GO) list ./... | grep -v /tests/)

e2e: deps build kube-bins
	$(TEST_ENV) $(GO) test $(GOTEST_FLAGS) ./tests/...

demo: deps build
	scripts/demo.sh

# Side-by-side benchmarks; see tests/bench/README.md.
bench: deps build
	scripts/bench.sh

# A local multi-node cluster (see scripts/cluster.sh): NODES nodes with
# kubelet and containerd, kube-proxy on or off, nodegress installed from
# manifests/ (NODEGRESS=off leaves it out). `make cluster-down` removes it.
NODES ?= 2
KUBE_PROXY ?= off
NODEGRESS ?= on
cluster:
	NODES=$(NODES) KUBE_PROXY=$(KUBE_PROXY) NODEGRESS=$(NODEGRESS) scripts/cluster.sh up

cluster-down:
	scripts/cluster.sh down

# The demo on the local cluster: real kubelets and pods, nodegress as its
# DaemonSet, no kube-proxy; the cluster is removed at the end.
demo-cluster: deps build
	scripts/demo-cluster.sh

# Kubernetes' own e2e tests of Services, EndpointSlices, NodePorts, session
# affinity, traffic policies and Ingress on the local cluster, with
# kube-proxy and then with nodegress instead (up to 50 minutes); see
# tests/upstream/README.md.
e2e-upstream:
	scripts/e2e-upstream.sh all

# The Gateway API conformance suite (the version of the API in go.mod) on
# the local cluster, nodegress installed from manifests/; writes the
# ConformanceReport under conformance/reports/ (see scripts/conformance.sh).
conformance: deps build kube-bins
	scripts/conformance.sh

clean:
	rm -rf $(BIN)
