# DiStoNet — build, test, end-to-end boots, benchmarks, lint, demo.
# `make test` and `make demo` install what they need on a fresh Debian machine (as root) first.

SHELL     := /bin/bash
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
BIN       := bin/distonet
STATICCHECK ?= $(shell go env GOPATH)/bin/staticcheck
DEPS_STAMP := build/.deps-$(shell sha256sum .ci/install-deps | cut -c1-12)
# Two cores: run at most two test binaries at once.
TESTFLAGS ?= -p 2 -timeout 20m

.PHONY: all build test e2e bench lint demo deps fuzz clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/distonet

# Debian packages and Go tools the tests, benchmarks and demo use (once per script version).
deps: $(DEPS_STAMP)
$(DEPS_STAMP): .ci/install-deps
	bash .ci/install-deps
	$(GO) install honnef.co/go/tools/cmd/staticcheck@latest
	mkdir -p build && touch $@

# Screenshots and console logs the tests save go to build/artifacts.
test: deps build
	mkdir -p build/artifacts
	DISTONET_ARTIFACTS=$(CURDIR)/build/artifacts $(GO) test $(TESTFLAGS) ./...

# Real boots of QEMU guests (slow: ~minutes each under TCG): tests named E2E* (gated by
# DISTONET_E2E=1) and those behind the e2e build tag (kernel NFS client, iPXE over TFTP/HTTP).
E2E_TESTS := E2E|TestKernelClient|TestIPXEBootsOverHTTP|TestIPXEFetchesOverTFTP
e2e: deps build
	mkdir -p build
	set -o pipefail; DISTONET_E2E=1 DISTONET_ARTIFACTS=$(CURDIR)/build/artifacts $(GO) test -tags e2e -p 1 -timeout 80m -run '$(E2E_TESTS)' -v ./... 2>&1 | tee build/e2e.log

bench: deps build
	mkdir -p build
	set -o pipefail; DISTONET_BENCH=1 $(GO) test -p 1 -timeout 60m -run 'Bench' -bench . -benchtime 1x -v ./bench/... 2>&1 | tee build/bench.log

fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list 'Fuzz.*' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime 20s $$pkg || exit 1; \
	  done; \
	done

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1)
	$(GO) vet ./...
	$(STATICCHECK) ./...

# The demo lab: builds the demo image, starts the appliance in a lab namespace and PXE-boots two QEMU nodes.
demo: deps build
	$(BIN) demo

clean:
	rm -rf bin build
