import Foundation
import NIOCore
import STOQIdentity
import STOQTransport

/// `stoq bench transport`: one STOQ connection over `[::1]` in this process — bulk throughput,
/// new-connection time to first byte, and memory per idle connection.
public enum TransportBenchmark {
    /// Runs the benchmark and prints one line per figure.
    ///
    /// - Parameters:
    ///   - megabytes: MiB sent on one unidirectional stream.
    ///   - handshakes: new connections to time (handshake to the first echoed byte).
    ///   - idleConnections: idle connections opened for the memory figure (0 skips it).
    ///   - offload: use UDP GSO/GRO (false to compare without).
    ///   - print: where each line goes.
    public static func run(
        megabytes: Int = 1000, handshakes: Int = 50, idleConnections: Int = 1000, offload: Bool = true,
        print: (String) -> Void = { Swift.print($0) }
    ) async throws {
        guard megabytes >= 1, handshakes >= 1, idleConnections >= 0 else {
            throw BenchmarkError("bench transport needs --megabytes and --handshakes of at least 1 and --idle-connections of 0 or more")
        }
        let ca = try CertificateAuthority.create(commonName: "bench CA")
        func tls(_ name: String) throws -> TLSConfiguration {
            let n = try ca.issue(name: name, ipAddresses: ["::1"])
            return TLSConfiguration(certificateChainPEM: n.certificateChainPEM, privateKeyPEM: n.privateKeyPEM, trustRootsPEM: ca.certificatePEM)
        }
        var config = EndpointConfiguration()
        if !offload {
            config.useGSO = false
            config.useGRO = false
        }
        let server = try await Endpoint.bind(host: "::1", port: 0, tls: try tls("server"), configuration: config)
        let client = try await Endpoint.bind(host: "::1", port: 0, tls: try tls("client"), configuration: config)
        let port = server.localAddress.port!

        let total = megabytes << 20
        let sink = Task { () -> (Int, Duration) in
            for await connection in server.incomingConnections {
                for await stream in connection.incomingStreams {
                    let clock = ContinuousClock()
                    let start = clock.now
                    var n = 0
                    for try await chunk in stream { n += chunk.readableBytes }
                    return (n, clock.now - start)
                }
            }
            return (0, .zero)
        }
        let connection = try await client.connect(host: "::1", port: port)
        let stream = try await connection.openUnidirectionalStream(priority: .bulk)
        let chunk = ByteBuffer(repeating: 0x5a, count: 1 << 20)
        for _ in 0..<megabytes { try await stream.write(chunk) }
        try await stream.finish()
        let (received, elapsed) = try await sink.value
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let gbps = Double(received) * 8 / seconds / 1e9
        let stats = await connection.stats()
        print(String(format: "STOQ one connection: %d MB in %.3f s = %.3f Gbit/s (rtt %@, cwnd %llu, sent %llu B UDP)",
                     received >> 20, seconds, gbps, "\(stats.smoothedRTT)", stats.congestionWindow, stats.bytesSent))
        guard received == total else {
            throw BenchmarkError("the server received \(received) of the \(total) bytes sent on one stream; run again, and if it repeats, run with --no-offload to rule out UDP GSO/GRO")
        }

        // Handshake time (new connection, to first byte of a stream echo).
        let echo = Task {
            for await c in server.incomingConnections {
                Task {
                    for await s in c.incomingStreams {
                        let d = try await s.readAll()
                        try await s.write(d)
                        try await s.finish()
                    }
                }
            }
        }
        let clock = ContinuousClock()
        var times: [Double] = []
        for _ in 0..<handshakes {
            let start = clock.now
            let c = try await client.connect(host: "::1", port: port)
            let s = try await c.openBidirectionalStream()
            try await s.write([1, 2, 3])
            try await s.finish()
            _ = try await s.read()
            let d = clock.now - start
            times.append(Double(d.components.seconds) * 1e3 + Double(d.components.attoseconds) / 1e15)
            await c.close()
        }
        times.sort()
        print(String(format: "new connection to first byte: median %.2f ms, p90 %.2f ms (%d runs)",
                     times[times.count / 2], times[times.count * 9 / 10], times.count))
        echo.cancel()

        // Memory per idle connection (client and server side both live in this process).
        if idleConnections > 0 {
            let before = residentBytes()
            var held: [Connection] = []
            for _ in 0..<idleConnections { held.append(try await client.connect(host: "::1", port: port)) }
            let after = residentBytes()
            print(String(format: "memory per idle connection (client + server side): %.1f KiB over %d connections",
                         Double(after - before) / 1024 / Double(idleConnections), idleConnections))
            for c in held { await c.close() }
        }
        await client.close()
        await server.close()
    }
}

/// Resident set size of this process (Linux /proc).
func residentBytes() -> Int {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in status.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let kb = line.split(separator: " ").compactMap { Int($0) }.first ?? 0
        return kb * 1024
    }
    return 0
}
