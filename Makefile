# meshnet — build, test, demo. `make help` lists the targets.
SHELL := /bin/bash
export PATH := /usr/local/go/bin:$(PATH)
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/meshnet/meshnet/internal/version.Version=$(VERSION)
# Pure packages: no root, run with the race detector.
PURE := ./gossip/... ./ipam/... ./dns/... ./plugin/... ./control/... ./daemon/... ./cmd/... ./internal/...

.PHONY: help build check unit kernel e2e test demo clean

help:
	@echo "make build   static binaries in bin/"
	@echo "make check   gofmt and go vet"
	@echo "make unit    pure-package tests with -race (no root)"
	@echo "make kernel  dataplane tests in network namespaces (root)"
	@echo "make e2e     multi-host suite with real Docker engines (root)"
	@echo "make test    all of the above: what CI runs"
	@echo "make demo    three simulated hosts, containers ping and resolve across them (root)"

build:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/ ./cmd/meshnetd ./cmd/meshctl

check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...

unit:
	go test -race -count=1 $(PURE)

kernel:
	go test -count=1 -p 1 ./dataplane/...

e2e: build
	go test -count=1 -p 1 -v -timeout 50m ./e2e/...

test: check unit kernel e2e

demo: build
	go run ./e2e/demo

clean:
	rm -rf bin
