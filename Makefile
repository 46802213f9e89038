# Meridian — build, test and run targets. Everything needs only Go (see go.mod
# for the version); the module proxy fetches the dependencies on first use.

GO        ?= go
BIN       := bin/meridian
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
PKGS      := ./...
# CI runs `make test`; keep it under 20 minutes on 2 cores.
TEST_TIMEOUT ?= 18m

.PHONY: all build test demo bench chaos lint fmt fuzz clean

all: build

## build: the single binary bin/meridian
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/meridian

## test: vet, then unit and integration tests with the race detector (what CI runs)
# -cpu 1 runs each test with GOMAXPROCS=1 (packages still run two at a time).
# Go 1.26's race runtime gives all the timers of a testing/synctest bubble one
# race context; a timer that a bubble goroutine fires inline (a zero-delay
# timer) while the bubble's timer loop runs on another thread corrupts it, and
# the test binary dies with SIGSEGV in the race runtime (seen in CI in the
# gossip tests, about one run in four). With one P the two never overlap; the
# race detector's happens-before checks do not need parallelism.
test:
	$(GO) vet $(PKGS)
	$(GO) test -race -cpu 1 -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

## demo: the main job on its embedded defaults
demo: build
	./$(BIN) netsim --regions 6 --duration 3m --summary-json demo-summary.json

## bench: every benchmark with allocation figures; gossip's virtual-time
## benchmarks simulate whole meshes, so they run once each
bench:
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m $$($(GO) list ./... | grep -v /gossip)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 1x -timeout 60m ./gossip/
	MERIDIAN_BENCH=1 $(GO) test -run '^TestWorldDay$$' -timeout 180m -v ./test/bench/ -args -out bench-results

## chaos: the long chaos suite (outside CI)
chaos:
	$(GO) test -count=1 -timeout 120m -run '^TestChaos$$' -parallel 3 -v ./test/chaos/ -args -seeds 200 -scenario random -json $(CURDIR)/chaos-report.json

## lint: gofmt check and go vet
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

## fmt: format every Go file
fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin
