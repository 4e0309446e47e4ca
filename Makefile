# shardkv developer targets. `make test` is what CI runs.
GO        ?= go
PKGS      := ./...
PROTOS    := $(wildcard api/*/*.proto internal/*/*.proto)
STATICCHECK_VERSION := v0.8.2

.PHONY: build test test-short lint proto run soak bench-etcd

build:
	$(GO) build -o bin/shardkv ./cmd/shardkv

# The whole suite, race detector on, in two passes. The packages that run
# real processes under faults (cmd/shardkv's fault tests time how long
# clients go unserved while a leader is stopped or cut off; the nemesis
# suite) run one at a time after the rest, which runs in parallel: on a
# two-core machine two such suites side by side make timings lie.
SERIAL_PKGS := ./cmd/shardkv ./nemesis
test:
	$(GO) test -race -count=1 -timeout 30m $$($(GO) list $(PKGS) | grep -v -e '/cmd/shardkv$$' -e '/nemesis$$')
	$(GO) test -race -count=1 -p 1 -timeout 30m $(SERIAL_PKGS)

test-short:
	$(GO) test -short -count=1 $(PKGS)

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

# Regenerates the committed protobuf code. Needs Debian's protobuf-compiler;
# the Go plugins come from the module proxy.
proto:
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
	PATH="$$($(GO) env GOPATH)/bin:$$PATH" protoc --go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative $(PROTOS)

run:
	$(GO) run ./cmd/shardkv dev

# The nemesis scenarios, repeated with fresh seeds: make soak SOAK=30m
SOAK ?= 30m
soak:
	SOAK=$(SOAK) $(GO) test -count=1 -v -timeout 0 -run TestSoak ./nemesis

# shardkv next to etcd on this machine (installs Debian's etcd-server).
bench-etcd:
	internal/bench/compare-etcd.sh
