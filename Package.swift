// swift-tools-version:6.1
//
// STOQ — secure transport over QUIC/IPv6 and the CDN built on it.
//
// The target graph is the layering proof (docs/ARCHITECTURE.md §1):
//   C shims  <-  STOQ* modules  <-  STOQ (umbrella)  <-  Nexus  <-  HyperMesh  <-  stoq (CLI)
// No STOQ* module depends on Nexus or HyperMesh, and Nexus never depends on HyperMesh.
// The node layer: STOQExchange  <-  STOQPeering, STOQEdgeNode, STOQAdmin (side by side, none
// imports another)  <-  STOQNode (the runtime)  <-  STOQHTTP. STOQInterop (hq-interop tooling for
// the CLI) sits on STOQExchange and is no product.
// Benchmarks (Benchmarks/: STOQBenchmarks, NexusBenchmarks, HyperMeshBenchmarks) and the DHT
// simulator (NexusSimulation) are targets but no product: nothing in a product depends on them, and
// each follows the same rules (STOQBenchmarks reaches no Nexus or HyperMesh, NexusBenchmarks no HyperMesh).
import PackageDescription

let nio = Target.Dependency.product(name: "NIOCore", package: "swift-nio")
let nioPosix = Target.Dependency.product(name: "NIOPosix", package: "swift-nio")
let crypto = Target.Dependency.product(name: "Crypto", package: "swift-crypto")
let x509 = Target.Dependency.product(name: "X509", package: "swift-certificates")
let asn1 = Target.Dependency.product(name: "SwiftASN1", package: "swift-asn1")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let grdb = Target.Dependency.product(name: "GRDB", package: "GRDB.swift")
let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
let collections = Target.Dependency.product(name: "Collections", package: "swift-collections")
let atomics = Target.Dependency.product(name: "Atomics", package: "swift-atomics")
let nioHTTP1 = Target.Dependency.product(name: "NIOHTTP1", package: "swift-nio")
let metrics = Target.Dependency.product(name: "Metrics", package: "swift-metrics")
let prometheus = Target.Dependency.product(name: "Prometheus", package: "swift-prometheus")
let serviceLifecycle = Target.Dependency.product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let nioSSL = Target.Dependency.product(name: "NIOSSL", package: "swift-nio-ssl")
let nioHTTP2 = Target.Dependency.product(name: "NIOHTTP2", package: "swift-nio-http2")
let nioWebSocket = Target.Dependency.product(name: "NIOWebSocket", package: "swift-nio")

let package = Package(
    name: "stoq",
    platforms: [.macOS(.v14)],
    products: [
        .library(name: "STOQ", targets: ["STOQ"]),
        .library(name: "Nexus", targets: ["Nexus"]),
        .library(name: "HyperMesh", targets: ["HyperMesh"]),
        .executable(name: "stoq", targets: ["stoq"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.3.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // HTTPS over TCP for the front door (STOQHTTP only): TLS with ALPN, HTTP/2.
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-http2.git", from: "1.46.0"),
    ],
    targets: [
        // MARK: C libraries (system) and the tiny C shims Swift cannot call directly.
        .systemLibrary(
            name: "CNgtcp2",
            path: "Sources/C/CNgtcp2",
            pkgConfig: "libngtcp2_crypto_gnutls",
            providers: [.apt(["libngtcp2-dev", "libngtcp2-crypto-gnutls-dev", "libgnutls28-dev"])]
        ),
        .target(
            name: "CNgtcp2Shims",
            dependencies: ["CNgtcp2"],
            path: "Sources/C/CNgtcp2Shims"
        ),
        .systemLibrary(
            name: "CNghttp3",
            path: "Sources/C/CNghttp3",
            pkgConfig: "libnghttp3",
            providers: [.apt(["libnghttp3-dev"])]
        ),
        .systemLibrary(
            name: "CZstd",
            path: "Sources/C/CZstd",
            pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]
        ),
        .systemLibrary(
            name: "CISAL",
            path: "Sources/C/CISAL",
            pkgConfig: "libisal",
            providers: [.apt(["libisal-dev"])]
        ),

        // MARK: STOQ layer
        // The one error pattern (a growable code, a reason for people): every module below uses it.
        .target(name: "STOQErrors"),
        .target(name: "STOQIdentity", dependencies: ["STOQErrors", crypto, x509, asn1]),
        .target(
            name: "STOQTransport",
            dependencies: ["STOQErrors", "STOQIdentity", "CNgtcp2", "CNgtcp2Shims", nio, nioPosix, logging, atomics, collections, crypto, x509]
        ),
        .target(name: "STOQWire", dependencies: ["STOQErrors", nio]),
        // Access grants and revocation lists (issue 15): sans-IO, no networking.
        .target(name: "STOQAccess", dependencies: ["STOQErrors", "STOQIdentity", "STOQWire", crypto, x509, nio]),
        .target(name: "STOQContent", dependencies: ["STOQErrors", "STOQIdentity", "CZstd", crypto, grdb, logging]),
        .target(name: "STOQSimulation", dependencies: [collections]),
        .target(name: "STOQRouting", dependencies: ["STOQSimulation", collections]),
        .target(name: "STOQSwarm", dependencies: ["STOQErrors", "STOQContent", "STOQWire", "STOQSimulation", collections]),
        .target(name: "STOQEdge", dependencies: ["STOQErrors", "STOQContent", "STOQSimulation", crypto, collections]),
        // The node layer, bottom to top. STOQExchange: the chunk protocol, its server and client,
        // peer connections, the fetcher and the node's shared vocabulary (addresses, errors,
        // metrics, the NodeService hook). STOQPeering: health probing, the routing matrix, relaying
        // and the multi-peer fetch. STOQEdgeNode: the edge provider and names. STOQAdmin: the
        // operator's HTTP endpoint. STOQNode: the runtime that composes them (and re-exports them).
        .target(
            name: "STOQExchange",
            dependencies: ["STOQErrors", "STOQIdentity", "STOQTransport", "STOQWire", "STOQContent", "STOQSwarm", "STOQEdge", "STOQAccess", crypto, logging, nio, metrics,
                           prometheus]
        ),
        .target(
            name: "STOQPeering",
            dependencies: ["STOQExchange", "STOQIdentity", "STOQTransport", "STOQWire", "STOQContent", "STOQRouting", "STOQSwarm", "STOQEdge",
                           crypto, logging, nio, nioPosix]
        ),
        .target(
            name: "STOQEdgeNode",
            dependencies: ["STOQExchange", "STOQIdentity", "STOQTransport", "STOQWire", "STOQContent", "STOQEdge", crypto, logging, nio]
        ),
        .target(name: "STOQAdmin", dependencies: ["STOQExchange", logging, nio, nioPosix, nioHTTP1]),
        // The audit trail of transfers (issue 15 item 7): hash-chained segments and signed heads.
        .target(name: "STOQAudit", dependencies: ["STOQErrors", "STOQIdentity", crypto, x509]),
        .target(
            name: "STOQNode",
            dependencies: ["STOQAudit", "STOQExchange", "STOQPeering", "STOQEdgeNode", "STOQAdmin", "STOQIdentity", "STOQTransport", "STOQWire", "STOQContent",
                           "STOQRouting", "STOQSwarm", "STOQEdge", logging, serviceLifecycle]
        ),
        // The HTTP front door: HTTP/3 (nghttp3 on STOQTransport) and HTTPS over TCP, for browsers and HTTP clients.
        .target(
            name: "STOQHTTP",
            dependencies: ["STOQNode", "STOQExchange", "STOQEdgeNode", "STOQTransport", "STOQContent", "STOQEdge", "STOQIdentity", "CNghttp3",
                           crypto, logging, nio, nioPosix, nioHTTP1, nioSSL, nioHTTP2, nioWebSocket, collections]
        ),
        .target(
            name: "STOQ",
            dependencies: ["STOQErrors", "STOQIdentity", "STOQTransport", "STOQWire", "STOQContent", "STOQRouting", "STOQSwarm", "STOQEdge", "STOQAccess",
                           "STOQExchange", "STOQPeering", "STOQEdgeNode", "STOQAdmin", "STOQNode", "STOQHTTP", "STOQAudit"]
        ),

        // MARK: Nexus (discovery) and HyperMesh (sharded storage)
        .target(name: "Nexus", dependencies: ["STOQ", "STOQErrors", "STOQIdentity", "STOQRouting", "STOQSimulation", crypto, grdb, collections, nio, nioPosix, logging]),
        .target(name: "HyperMesh", dependencies: ["Nexus", "STOQ", "STOQErrors", "STOQIdentity", "STOQSimulation", "CISAL", crypto, "CZstd", nio, logging]),

        // MARK: QUIC interop tooling: hq-interop file serving and fetching (`stoq serve`, `stoq fetch`,
        // Tests/Interop). A target, never a product: no library user links it.
        .target(name: "STOQInterop", dependencies: ["STOQExchange", "STOQIdentity", "STOQTransport", crypto, logging, nio]),

        // MARK: Simulation harnesses and benchmarks: targets, never products (no library user links them).
        // Each product's benchmarks sit in Benchmarks/<product>/ and follow the products' layering.
        .target(name: "NexusSimulation", dependencies: ["Nexus", "STOQSimulation", collections]),
        .target(
            name: "STOQBenchmarks",
            dependencies: ["STOQIdentity", "STOQTransport", "STOQContent", "STOQRouting", "STOQSwarm", "STOQEdge", "STOQNode", "STOQSimulation", crypto, nio,
                           nioPosix],
            path: "Benchmarks/STOQ"
        ),
        .target(
            name: "NexusBenchmarks",
            dependencies: ["Nexus", "NexusSimulation", "STOQBenchmarks", "STOQIdentity", "STOQTransport", "STOQContent", "STOQRouting", "STOQNode",
                           "STOQSimulation", crypto, nio],
            path: "Benchmarks/Nexus"
        ),
        .target(name: "HyperMeshBenchmarks", dependencies: ["HyperMesh", "STOQSimulation"], path: "Benchmarks/HyperMesh"),

        // MARK: Command-line tool
        .executableTarget(
            name: "stoq",
            dependencies: ["STOQ", "STOQAudit", "Nexus", "HyperMesh", "STOQInterop", "STOQBenchmarks", "NexusBenchmarks", "HyperMeshBenchmarks", argumentParser, logging, nioPosix, crypto, serviceLifecycle]
        ),

        // A small HTTP/3 file server for the process-level tests in Tests/HTTP3 (STOQHTTP alone).
        .executableTarget(name: "stoq-http3-harness", dependencies: ["STOQHTTP", crypto], path: "Tests/HTTP3Harness"),

        // MARK: Tests (beside each module)
        // Helpers for tests that start real nodes (a throwaway CA, fault-injecting providers and
        // servers, waits): a target, never a product, shared by the test targets that start nodes.
        .target(
            name: "STOQTestSupport",
            dependencies: ["STOQNode", "STOQIdentity", "STOQTransport", "STOQContent", "STOQEdge", "STOQSimulation", "STOQWire", nio, nioPosix],
            path: "Tests/STOQTestSupport"
        ),
        // How the test-vector suites read and rewrite docs/test-vectors (a target, never a product).
        .target(name: "TestVectorSupport", dependencies: ["STOQIdentity"], path: "Tests/TestVectorSupport"),
        .testTarget(name: "STOQIdentityTests", dependencies: ["STOQIdentity", x509, crypto]),
        .testTarget(name: "STOQTransportTests", dependencies: ["STOQTransport", "STOQIdentity", nio, nioPosix, crypto]),
        .testTarget(name: "STOQAccessTests", dependencies: ["STOQAccess", "STOQIdentity", "STOQWire", crypto, x509, asn1]),
        .testTarget(name: "STOQWireTests", dependencies: ["STOQWire", "STOQSimulation", "STOQIdentity", "TestVectorSupport", nio, crypto]),
        .testTarget(name: "STOQContentTests", dependencies: ["STOQContent", "STOQIdentity", "STOQSimulation", "TestVectorSupport", crypto]),
        .testTarget(name: "STOQRoutingTests", dependencies: ["STOQRouting", "STOQSimulation"]),
        .testTarget(name: "STOQSimulationTests", dependencies: ["STOQSimulation"]),
        .testTarget(name: "STOQAuditTests", dependencies: ["STOQAudit", "STOQIdentity", crypto]),
        .testTarget(name: "STOQSwarmTests", dependencies: ["STOQSwarm", "STOQSimulation", "STOQBenchmarks"]),
        .testTarget(name: "NexusTests", dependencies: ["Nexus", "STOQTestSupport", "NexusSimulation", "NexusBenchmarks", "STOQSimulation", "STOQNode", "STOQIdentity", "STOQTransport", "STOQContent", crypto]),
        .testTarget(name: "HyperMeshTests", dependencies: ["HyperMesh", "HyperMeshBenchmarks", "Nexus", "STOQSimulation", "STOQNode", "STOQIdentity", crypto, nio]),
        .testTarget(name: "STOQExchangeTests", dependencies: ["STOQExchange", "STOQContent", "STOQSwarm"]),
        .testTarget(name: "STOQInteropTests", dependencies: ["STOQInterop", "STOQExchange"]),
        .testTarget(name: "STOQNodeTests", dependencies: ["STOQNode", "STOQExchange", "STOQTestSupport", "TestVectorSupport", "STOQBenchmarks", "STOQIdentity", "STOQTransport", "STOQContent", "STOQEdge", "STOQRouting", "STOQSwarm", "STOQSimulation", "STOQAudit", nio, nioPosix]),
        .testTarget(name: "STOQEdgeTests", dependencies: ["STOQEdge", "STOQSimulation", "STOQIdentity", "TestVectorSupport", "STOQBenchmarks"]),
        .testTarget(name: "CLITests", dependencies: ["STOQIdentity", crypto]),
        .testTarget(name: "STOQHTTPTests", dependencies: ["STOQHTTP", "STOQNode", "STOQTestSupport", "STOQTransport", "STOQIdentity", "STOQContent", "STOQEdge", crypto,
                                                       nio, nioPosix, nioSSL, nioHTTP1, nioHTTP2, nioWebSocket]),
        // The static HTTPS server the pytest suite in Tests/HTTP drives (a target, never a product).
        .executableTarget(name: "stoq-https-testserver", dependencies: ["STOQHTTP", "STOQIdentity", crypto], path: "Tests/HTTPSTestServer"),
    ],
    swiftLanguageModes: [.v6]
)
