# STOQ — the two commands a newcomer needs: `make demo` and `make test`.
# Every target first installs what is missing (scripts/bootstrap.sh).

SWIFT       ?= swift
# One build configuration for everything `make` runs: release (-O, whole-module), with testability
# on so that the Swift tests (`@testable import`) run against the very modules and binary the
# process tests run. One configuration means every dependency (BoringSSL twice, swift-nio, GRDB…)
# is compiled once, not once for debug and once for release: that alone kept `make test` from a
# clean clone over 30 minutes. -enable-testing keeps internal symbols visible; it does not change
# the optimisation level. `make bench` builds without it (the binary as a user installs it).
BUILD_FLAGS := -c release -Xswiftc -enable-testing
RELEASE_BIN := .build/release/stoq
DEBUG_BIN   := .build/debug/stoq
PYTEST      ?= python3 -m pytest
# The binary every process-level test runs: the release build, the one users run (a release-only
# crash of `stoq get --peers` went unseen while these tests ran the debug build).
STOQ_RELEASE := $(abspath $(RELEASE_BIN))
# Each step of `make test` is timed (scripts/timed.sh); the table is printed at the end, pass or fail.
export STOQ_TIMES := $(abspath .build/make-test-times.txt)
TIMED       := bash scripts/timed.sh

.PHONY: all deps build release demo test test-steps interop-test netns-test journeys-test netfuzz-test liveness-test \
        run-interop-test run-netns-test run-journeys-test run-netfuzz-test run-liveness-test http3-test run-http3-test http-test run-http-test bench fuzz clean \
        deploy-test run-deploy-test

all: build

deps:
	@bash scripts/bootstrap.sh

build: deps
	$(SWIFT) build $(BUILD_FLAGS) --build-tests

release: deps
	$(SWIFT) build $(BUILD_FLAGS) --product stoq

## The main job: a small local STOQ network that publishes and fetches content.
demo: release
	$(RELEASE_BIN) demo

## Every test: unit + integration (real QUIC over [::1]), then the release binary through interop with
## aioquic, network namespaces (where allowed), the network fuzzer's short round, liveness and the
## user journeys of the README.
# Swift tests in two groups (scripts/swift-tests.sh): the suites that do not need real time run in
# parallel, then the real-time ones (real QUIC, nodes, processes; every `@Suite(.serialized)`) one
# at a time, so nothing starves their stall, keepalive and probe timers as 60 suites at once on
# 2 cores did (idle timeouts, false stalls).
# Everything is built once, in release with testability (BUILD_FLAGS); the Swift tests that run the
# binary (STOQ_BIN) use the same `stoq`.
test: deps
	@rm -f $(STOQ_TIMES)
	@$(MAKE) --no-print-directory test-steps; status=$$?; $(TIMED) --report; exit $$status

test-steps:
	$(TIMED) build $(SWIFT) build $(BUILD_FLAGS) --build-tests
	$(TIMED) swift-tests env STOQ_BIN=$(STOQ_RELEASE) SWIFT="$(SWIFT)" bash scripts/swift-tests.sh $(BUILD_FLAGS)
	$(TIMED) interop $(MAKE) --no-print-directory run-interop-test
	$(TIMED) http3 $(MAKE) --no-print-directory run-http3-test
	$(TIMED) https $(MAKE) --no-print-directory run-http-test
	$(TIMED) netns $(MAKE) --no-print-directory run-netns-test
	$(TIMED) netfuzz $(MAKE) --no-print-directory run-netfuzz-test
	$(TIMED) liveness $(MAKE) --no-print-directory run-liveness-test
	$(TIMED) journeys $(MAKE) --no-print-directory run-journeys-test
	$(TIMED) deploy $(MAKE) --no-print-directory run-deploy-test

## aioquic (a QUIC stack nobody here wrote) against stoq serve / stoq fetch, both directions.
interop-test: release
	$(MAKE) --no-print-directory run-interop-test

## Four hosts in network namespaces (veth, IPv6 ULA, tc tbf); skips where namespaces cannot be made.
netns-test: release
	$(MAKE) --no-print-directory run-netns-test

## What the README shows, typed as a user types it, on the release binary (Tests/Journeys).
journeys-test: release
	$(MAKE) --no-print-directory run-journeys-test

run-interop-test:
	STOQ_BIN=$(STOQ_RELEASE) $(PYTEST) -q Tests/Interop

## HTTP/3 from aioquic, ngtcp2's gtlsclient and headless Chromium (forced onto QUIC) against STOQHTTP's
## HTTP3Server, started through its test harness (built by `swift build`).
http3-test: deps
	$(SWIFT) build $(BUILD_FLAGS) --product stoq-http3-harness
	$(MAKE) --no-print-directory run-http3-test

run-http3-test:
	STOQ_HTTP3_HARNESS=$(abspath .build/release/stoq-http3-harness) $(PYTEST) -q -rs Tests/HTTP3

# Serial: side by side (pytest-xdist -n 2 --dist loadfile; the two files' namespaces are independent)
# it saved only ~20 s (129 -> 107..111 s) and one of three such runs ended minutes after pytest did.
run-netns-test:
	STOQ_BIN=$(STOQ_RELEASE) $(PYTEST) -q -rs Tests/Network

# The journeys are independent (each starts its own nodes on [::1]:0, in its own temp HOME) and
# wait mostly on timers and the network, so they run in JOURNEY_WORKERS pytest-xdist processes
# (one test file per worker at a time: a file's module fixtures start once). Every worker's command
# lines go to one log (STOQ_ARGV_LOG); the README coverage check reads it after all of them ended.
# JOURNEY_WORKERS=0 runs them in this process, one at a time.
JOURNEY_WORKERS  ?= 3
JOURNEY_ARGV_LOG := $(abspath .build/journeys-argv.log)
run-journeys-test:
	@rm -f $(JOURNEY_ARGV_LOG)
	STOQ_BIN=$(STOQ_RELEASE) STOQ_ARGV_LOG=$(JOURNEY_ARGV_LOG) $(PYTEST) -q -rsx --durations=10 -n $(JOURNEY_WORKERS) --dist loadfile \
	    --deselect Tests/Journeys/test_zz_readme_coverage.py::test_every_readme_command_is_exercised Tests/Journeys
	STOQ_BIN=$(STOQ_RELEASE) STOQ_ARGV_LOG=$(JOURNEY_ARGV_LOG) $(PYTEST) -q -rsx Tests/Journeys/test_zz_readme_coverage.py

## The network fuzzer's short seeded round (20 s of attack): a hostile aioquic peer against a running
## stoq node process; it must not crash, must keep serving, and its RSS must come back (Tests/NetFuzz).
netfuzz-test: release
	$(MAKE) --no-print-directory run-netfuzz-test

run-netfuzz-test:
	STOQ_BIN=$(STOQ_RELEASE) $(PYTEST) -q -s Tests/NetFuzz

## The release binary refusing bad settings, the kill -9 hang, SIGSTOP detection (real processes on [::1]).
liveness-test: release
	$(MAKE) --no-print-directory run-liveness-test

run-liveness-test:
	STOQ_BIN=$(STOQ_RELEASE) $(PYTEST) -q Tests/Liveness

## The HTTPS front door over TCP: curl (HTTP/1.1, HTTP/2), a WebSocket client, hostile clients and
## headless Chromium against HTTPSServer (Tests/HTTP; the listener runs as stoq-https-testserver).
http-test: deps
	$(SWIFT) build $(BUILD_FLAGS) --product stoq-https-testserver
	$(MAKE) --no-print-directory run-http-test

run-http-test:
	STOQ_BIN=$(STOQ_RELEASE) STOQ_HTTPS_TESTSERVER=$(abspath .build/release/stoq-https-testserver) $(PYTEST) -q -rs Tests/HTTP

## deploy/ (systemd units, Kubernetes manifests, Prometheus, Grafana) checked offline, in seconds:
## the manifests against the Kubernetes API schemas (kubernetes-validate), the units with
## systemd-analyze, the rules with promtool (where installed), and every metric they name.
deploy-test: deps
	$(MAKE) --no-print-directory run-deploy-test

run-deploy-test:
	$(PYTEST) -q -rs Tests/Deploy

## Benchmarks: every figure beside its peer from the same run, as a ratio.
bench: deps
	@STOQ_BENCH=1 bash scripts/bootstrap.sh
	$(SWIFT) build -c release --product stoq
	$(SWIFT) build -c release --product stoq-http3-harness
	@bash scripts/bench.sh $(abspath $(RELEASE_BIN))

## Bounded libFuzzer runs over every decoder, then the network fuzzer against a running release node
## for NETFUZZ_SECONDS (default 180; NETFUZZ_SEED picks the frames).
NETFUZZ_SECONDS ?= 180
NETFUZZ_SEED    ?= 1
fuzz: deps
	$(SWIFT) build --product stoq
	@bash scripts/fuzz.sh
	$(SWIFT) build $(BUILD_FLAGS) --product stoq
	python3 Tests/NetFuzz/netfuzz.py --stoq $(abspath $(RELEASE_BIN)) --seed $(NETFUZZ_SEED) --seconds $(NETFUZZ_SECONDS) --json fuzz-out/netfuzz.json

clean:
	rm -rf .build bench-out fuzz-out demo-out
