# meshnet — build, test, demo. `make help` lists the targets.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/meshnet/meshnet/internal/version.Version=$(VERSION)
# Pure packages: no root, run with the race detector.
PURE := ./gossip/... ./ipam/... ./dns/... ./plugin/... ./control/... ./daemon/... ./cmd/... ./internal/... ./bench/... ./discover/... ./metrics/... ./e2e/failsum/...

.PHONY: help build plugin check unit kernel e2e test demo bench clean

help:
	@echo "make build   static binaries in bin/"
	@echo "make plugin  Docker managed-plugin bundle in build/plugin/ (docker plugin create meshnet build/plugin)"
	@echo "make check   gofmt and go vet"
	@echo "make unit    pure-package tests with -race (no root)"
	@echo "make kernel  dataplane and container-DNS tests in network namespaces (root)"
	@echo "make e2e     multi-host suite with real Docker engines (root)"
	@echo "make test    all of the above: what CI runs"
	@echo "make demo    three simulated hosts, containers ping and resolve across them (root)"
	@echo "make bench   meshnet beside Swarm's overlay, the underlay, wireguard-go, Docker's DNS (root, ~7 min)"

build:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/meshnetd ./cmd/meshctl

# config.json and rootfs/ with the static binaries; see internal/pluginbundle.
plugin: build
	go run ./cmd/mkplugin -o build/plugin bin/meshnetd bin/meshctl

check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...

unit:
	go test -race -count=1 $(PURE)

kernel:
	go test -count=1 -p 1 ./dataplane/... ./sandbox/...

# failsum repeats each failure's own last log lines at the end, past the hosts' dumps.
e2e: build
	go build -o build/failsum ./e2e/failsum
	set -o pipefail; go test -count=1 -p 1 -v -timeout 70m ./e2e/... 2>&1 | build/failsum

test: check unit kernel e2e

demo: build
	go run ./e2e/demo

# Not part of test: figures, not assertions. Writes build/bench/latest.{txt,json,svg} and the
# table in docs/benchmarks.md.
bench:
	go run ./bench/cmd/meshbench $(BENCHFLAGS)

clean:
	rm -rf bin build/plugin
