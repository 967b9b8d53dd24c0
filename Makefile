# STOQ — the two commands a newcomer needs: `make demo` and `make test`.
# Every target first installs what is missing (scripts/bootstrap.sh).

SWIFT       ?= swift
RELEASE_BIN := .build/release/stoq
DEBUG_BIN   := .build/debug/stoq
PYTEST      ?= python3 -m pytest

.PHONY: all deps build release demo test interop-test netns-test bench fuzz clean

all: build

deps:
	@bash scripts/bootstrap.sh

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release --product stoq

## The main job: a small local STOQ network that publishes and fetches content.
demo: release
	$(RELEASE_BIN) demo

## Every test: unit + integration (real QUIC over [::1]), interop with aioquic, namespaces where allowed.
# Swift tests in two groups (scripts/swift-tests.sh): the suites that do not need real time run in
# parallel, then the real-time ones (real QUIC, nodes, processes; every `@Suite(.serialized)`) one
# at a time, so nothing starves their stall, keepalive and probe timers as 60 suites at once on
# 2 cores did (idle timeouts, false stalls).
test: deps
	$(SWIFT) build --build-tests
	SWIFT="$(SWIFT)" bash scripts/swift-tests.sh
	$(MAKE) --no-print-directory interop-test netns-test

## aioquic (a QUIC stack nobody here wrote) against stoq serve / stoq fetch, both directions.
interop-test: deps
	$(SWIFT) build --product stoq
	STOQ_BIN=$(abspath $(DEBUG_BIN)) $(PYTEST) -q Tests/Interop

## Four hosts in network namespaces (veth, IPv6 ULA, tc tbf); skips where namespaces cannot be made.
netns-test: deps
	$(SWIFT) build --product stoq
	STOQ_BIN=$(abspath $(DEBUG_BIN)) $(PYTEST) -q -rs Tests/Network

## Benchmarks: every figure beside its peer from the same run, as a ratio.
bench: release
	@bash scripts/bench.sh $(abspath $(RELEASE_BIN))

## Bounded libFuzzer runs over every decoder.
fuzz: deps
	$(SWIFT) build --product stoq
	@bash scripts/fuzz.sh

clean:
	rm -rf .build bench-out fuzz-out demo-out
