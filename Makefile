# STOQ — the two commands a newcomer needs: `make demo` and `make test`.
# Every target first installs what is missing (scripts/bootstrap.sh).

SWIFT       ?= swift
RELEASE_BIN := .build/release/stoq
DEBUG_BIN   := .build/debug/stoq
PYTEST      ?= python3 -m pytest

.PHONY: all deps build release demo test interop-test netns-test netfuzz-test liveness-test bench fuzz clean

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
# Swift tests run one at a time: the real-QUIC tests measure stalls and keepalives in real time, and
# on a 2-core machine 60 suites at once starve Swift's 2-thread cooperative pool for seconds (CI saw
# idle timeouts and false stalls). Serial takes about 140 s instead of 80.
test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --no-parallel
	$(MAKE) --no-print-directory interop-test netns-test netfuzz-test liveness-test

## aioquic (a QUIC stack nobody here wrote) against stoq serve / stoq fetch, both directions.
interop-test: deps
	$(SWIFT) build --product stoq
	STOQ_BIN=$(abspath $(DEBUG_BIN)) $(PYTEST) -q Tests/Interop

## Four hosts in network namespaces (veth, IPv6 ULA, tc tbf); skips where namespaces cannot be made.
netns-test: deps
	$(SWIFT) build --product stoq
	STOQ_BIN=$(abspath $(DEBUG_BIN)) $(PYTEST) -q -rs Tests/Network

## The network fuzzer's short seeded round (30 s of attack): a hostile aioquic peer against a running
## stoq node process; it must not crash, must keep serving, and its RSS must come back (Tests/NetFuzz).
netfuzz-test: deps
	$(SWIFT) build --product stoq
	STOQ_BIN=$(abspath $(DEBUG_BIN)) $(PYTEST) -q -s Tests/NetFuzz

## The release binary refusing bad settings, the kill -9 hang, SIGSTOP detection (real processes on [::1]).
liveness-test: release
	STOQ_BIN=$(abspath $(RELEASE_BIN)) $(PYTEST) -q Tests/Liveness

## Benchmarks: every figure beside its peer from the same run, as a ratio.
bench: release
	@bash scripts/bench.sh $(abspath $(RELEASE_BIN))

## Bounded libFuzzer runs over every decoder, then the network fuzzer against a running release node
## for NETFUZZ_SECONDS (default 180; NETFUZZ_SEED picks the frames).
NETFUZZ_SECONDS ?= 180
NETFUZZ_SEED    ?= 1
fuzz: deps
	$(SWIFT) build --product stoq
	@bash scripts/fuzz.sh
	$(SWIFT) build -c release --product stoq
	python3 Tests/NetFuzz/netfuzz.py --stoq $(abspath $(RELEASE_BIN)) --seed $(NETFUZZ_SEED) --seconds $(NETFUZZ_SECONDS) --json fuzz-out/netfuzz.json

clean:
	rm -rf .build bench-out fuzz-out demo-out
