// swift-tools-version:6.1
//
// libFuzzer harnesses for every STOQ decoder. Built by `make fuzz` (scripts/fuzz.sh) with
//   swift build -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
// Each target exports LLVMFuzzerTestOneInput and calls a module's public fuzz entry point.
import PackageDescription

let package = Package(
    name: "stoq-fuzz",
    dependencies: [.package(name: "stoq", path: "..")],
    targets: [
        .target(name: "FuzzSupport"),
        .executableTarget(name: "FuzzWire", dependencies: ["FuzzSupport", .product(name: "STOQ", package: "stoq")]),
        .executableTarget(name: "FuzzDatagram", dependencies: ["FuzzSupport", .product(name: "STOQ", package: "stoq")]),
        .executableTarget(name: "FuzzManifest", dependencies: ["FuzzSupport", .product(name: "STOQ", package: "stoq")]),
        .executableTarget(name: "FuzzHyperMesh", dependencies: ["FuzzSupport", .product(name: "HyperMesh", package: "stoq")]),
        .executableTarget(name: "FuzzNexus", dependencies: ["FuzzSupport", .product(name: "Nexus", package: "stoq")]),
        .executableTarget(name: "FuzzEdgeNames", dependencies: ["FuzzSupport", .product(name: "STOQ", package: "stoq")]),
        .executableTarget(name: "FuzzEdgeProtocol", dependencies: ["FuzzSupport", .product(name: "STOQ", package: "stoq")]),
        .executableTarget(name: "FuzzTicket", dependencies: ["FuzzSupport", .product(name: "STOQ", package: "stoq")]),
        .executableTarget(name: "FuzzGrant", dependencies: ["FuzzSupport", .product(name: "STOQ", package: "stoq")]),
        .executableTarget(name: "FuzzSealed", dependencies: ["FuzzSupport", .product(name: "STOQ", package: "stoq")]),
        .executableTarget(name: "FuzzAudit", dependencies: ["FuzzSupport", .product(name: "STOQ", package: "stoq")]),
    ],
    swiftLanguageModes: [.v6]
)
