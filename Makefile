# nix-ota: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/nix-ota/nix-ota/cli.Version=$(VERSION) -X github.com/nix-ota/nix-ota/agent.Version=$(VERSION)
GO ?= go
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FUZZTIME ?= 30s

.PHONY: all build demo test test-deps go-test nix-parse fuzz bench clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/nix-ota ./cmd/nix-ota
	CGO_ENABLED=0 $(GO) build -trimpath -tags nethttpomithttp2 -ldflags '$(LDFLAGS)' -o bin/nix-ota-agent ./cmd/nix-ota-agent

## demo: the main job end to end on a file:// bucket under ./demo
demo: build
	./scripts/demo.sh

## test: install what tests need (idempotent), then run every test
test: test-deps go-test nix-parse

test-deps:
	./scripts/test-deps.sh

go-test:
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...

## nix-parse: every .nix file in the repository parses, and the package's
## vendorHash matches `go mod vendor` (what this machine can check of the flake)
nix-parse:
	@set -e; n=0; for f in $$(git ls-files '*.nix'); do nix-instantiate --parse "$$f" >/dev/null; n=$$((n+1)); done; echo "nix-parse: $$n files parse"
	@want=$$(./scripts/vendor-hash.sh 2>/dev/null | tail -n1); grep -q "vendorHash = \"$$want\"" nix/package.nix || { echo "nix/package.nix: vendorHash is stale; set it to $$want"; exit 1; }; echo "nix-parse: vendorHash $$want is current"

## bench: every measured figure (docs/cost.md explains them); writes bench/results.json
bench: test-deps
	@command -v aws >/dev/null || { echo "bench: installing awscli (the baseline)"; $(SUDO) apt-get install -y -qq awscli >/dev/null; }
	@[ -x /usr/bin/time ] || { echo "bench: installing GNU time (peak RSS)"; $(SUDO) apt-get install -y -qq time >/dev/null; }
	@command -v patchelf >/dev/null || { echo "bench: installing patchelf (bench/deltaupdate's rebuild cascade)"; $(SUDO) apt-get install -y -qq patchelf >/dev/null; }
	rm -f bench/results.json
	$(GO) run ./bench/agentpoll -runs 20
	$(GO) run ./bench/cost
	$(GO) run ./bench/compare -runs 20
	$(GO) run ./bench/push -mib 64 -closure-scale 8
	$(GO) run ./bench/deltaupdate -runs 3
	$(GO) run ./bench/dashboard -devices 10000,100000 -publish-at 10,10000,100000 -runs 3
	$(GO) run ./bench/fleetsim -n 100,1000,10000 -interval 60s

## fuzz: run every fuzz target for FUZZTIME each
fuzz:
	./scripts/fuzz.sh $(FUZZTIME)

clean:
	rm -rf bin demo
