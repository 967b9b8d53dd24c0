import ArgumentParser
import Dispatch
import Foundation
import STOQ
import STOQInterop
import STOQNode

/// Parses `[ADDR]:PORT` (IPv6 literal in brackets) or a bare port.
struct ListenAddress: ExpressibleByArgument, Sendable {
    var host: String
    var port: Int

    init?(argument: String) {
        if let port = Int(argument) {
            self.host = "::1"
            self.port = port
            return
        }
        guard argument.hasPrefix("["), let close = argument.firstIndex(of: "]") else { return nil }
        host = String(argument[argument.index(after: argument.startIndex)..<close])
        let rest = argument[argument.index(after: close)...]
        guard rest.hasPrefix(":"), let port = Int(rest.dropFirst()), (0...65535).contains(port) else { return nil }
        self.port = port
    }

    static var defaultValueDescription: String { "[::1]:4433" }
}

/// Waits for SIGINT or SIGTERM, then calls `shutdown`.
func runUntilSignalled(shutdown: @escaping @Sendable () async -> Void) async {
    let signalNumber = await TerminationSignal.wait()
    FileHandle.standardError.write(Data("stoq: signal \(signalNumber), shutting down\n".utf8))
    await shutdown()
}

/// Turns SIGINT/SIGTERM into an awaitable event.
///
/// `@unchecked Sendable`: the dispatch sources are created once and only touched on `queue`.
final class TerminationSignal: @unchecked Sendable {
    private let queue = DispatchQueue(label: "stoq.signals")
    private var sources: [any DispatchSourceSignal] = []

    static func wait() async -> Int32 {
        let box = TerminationSignal()
        return await withCheckedContinuation { (continuation: CheckedContinuation<Int32, Never>) in
            box.queue.async {
                var resumed = false
                for sig in [SIGINT, SIGTERM] {
                    signal(sig, SIG_IGN)
                    let source = DispatchSource.makeSignalSource(signal: sig, queue: box.queue)
                    source.setEventHandler {
                        guard !resumed else { return }
                        resumed = true
                        box.sources.forEach { $0.cancel() }
                        continuation.resume(returning: sig)
                    }
                    source.resume()
                    box.sources.append(source)
                }
            }
        }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the files under ROOT over QUIC (hq-interop: `GET /path` per stream)."
    )
    @Argument(help: "Directory whose files are served (no path escapes).") var root: String
    @Option(help: "Address to listen on, e.g. '[::1]:4433' (IPv6 only; port 0 picks one).") var listen: ListenAddress = ListenAddress(argument: "[::1]:4433")!
    @Option(help: "Server certificate chain (PEM).") var cert: String
    @Option(help: "Server private key (PEM).") var key: String
    @Option(help: "Require client certificates issued by this CA (PEM). Without it no client certificate is asked for.") var ca: String?
    @Option(help: "ALPN to accept (repeatable; default: hq-interop and stoq/1).") var alpn: [String] = []
    @Option(help: "Restrict TLS cipher suites: aes128gcm, aes256gcm, chacha20 (repeatable).") var cipher: [String] = []
    @Option(help: "Per-connection send rate limit in bytes/s.") var rateLimit: UInt64?
    @Option(help: "Idle timeout in seconds.") var idleTimeout: Int = 30
    @Option(help: "UDP sockets on the listen address (SO_REUSEPORT), one event loop each (1-64).") var eventLoops: Int = 1

    func run() async throws {
        let server = try HQFileServer(root: root)
        var tls = TLSConfiguration(
            certificateChainPEM: try PEMFile.read(cert),
            privateKeyPEM: try PEMFile.read(key),
            trustRootsPEM: try ca.map { path throws(IdentityError) in try PEMFile.read(path) },
            alpn: alpn.isEmpty ? [HQInterop.alpn, STOQMessage.alpn] : alpn,
            requireClientCertificate: ca != nil
        )
        tls.cipherSuites = try parseCiphers(cipher)
        var config = EndpointConfiguration()
        config.idleTimeout = .seconds(idleTimeout)
        if let rateLimit { config.rateLimit = RateLimit(bytesPerSecond: rateLimit) }
        config.eventLoops = eventLoops
        let endpoint = try await Endpoint.bind(host: listen.host, port: listen.port, tls: tls, configuration: config)
        print("listening on [\(endpoint.localAddress.ipAddress ?? listen.host)]:\(endpoint.localAddress.port ?? listen.port)")
        fflush(nil)
        async let serving: Void = server.run(on: endpoint)
        await runUntilSignalled { await endpoint.close() }
        await serving
    }
}

struct Fetch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fetch one URL over QUIC (hq-interop) and print bytes, SHA-256, seconds and Mbit/s.",
        discussion: """
            The SHA-256 of the body is always computed, as the bytes arrive, by the fetching task on \
            Swift's cooperative thread pool, never on the QUIC event loop: it costs one pass over the \
            bytes on another core and does not slow the transport while a core is free. The body is \
            written to --output from the received buffers as they are (no copy).
            """
    )
    @Argument(help: "URL like https://[::1]:4433/file.bin") var url: String
    @Option(name: .shortAndLong, help: "Write the body to FILE (default: discard).") var output: String?
    @Option(help: "Client certificate chain (PEM), for servers that require one.") var cert: String?
    @Option(help: "Client private key (PEM).") var key: String?
    @Option(help: "Verify the server against this CA certificate (PEM).") var ca: String?
    @Flag(help: "Do not verify the server's certificate.") var insecure = false
    @Option(help: "ALPN to offer.") var alpn: String = HQInterop.alpn
    @Option(help: "Restrict TLS cipher suites: aes128gcm, aes256gcm, chacha20 (repeatable).") var cipher: [String] = []
    @Option(help: "Idle timeout in seconds.") var idleTimeout: Int = 10

    func validate() throws {
        if ca == nil && !insecure { throw ValidationError("give --ca CA_PEM to verify the server, or --insecure") }
        if (cert == nil) != (key == nil) { throw ValidationError("--cert and --key go together") }
    }

    func run() async throws {
        let target = try HQURL(url)
        var tls = TLSConfiguration(
            certificateChainPEM: try cert.map { path throws(IdentityError) in try PEMFile.read(path) },
            privateKeyPEM: try key.map { path throws(IdentityError) in try PEMFile.read(path) },
            trustRootsPEM: try ca.map { path throws(IdentityError) in try PEMFile.read(path) },
            alpn: [alpn],
            verifyPeer: !insecure
        )
        tls.cipherSuites = try parseCiphers(cipher)
        var config = EndpointConfiguration()
        config.idleTimeout = .seconds(idleTimeout)
        let start = ContinuousClock.now
        let endpoint = try await Endpoint.bind(host: "::", port: 0, tls: tls, configuration: config)
        do {
            let serverName = target.host.contains(":") ? nil : target.host  // SNI carries DNS names only
            let connection = try await endpoint.connect(host: target.host, port: target.port, serverName: serverName)
            var handle: FileHandle?
            if let output {
                guard FileManager.default.createFile(atPath: output, contents: nil) else { throw CLIError("cannot create \(output)") }
                handle = FileHandle(forWritingAtPath: output)
            }
            defer { try? handle?.close() }
            let result = try await HQClient.fetch(path: target.path, on: connection, to: handle, startedAt: start)
            await connection.close()
            await endpoint.close()
            print(String(format: "fetched %d bytes sha256 %@ in %.3f s (%.1f Mbit/s)", result.bytes, result.sha256, result.seconds, result.megabitsPerSecond))
            if let ttfb = result.secondsToFirstByte { print(String(format: "time to first byte %.2f ms", ttfb * 1000)) }
        } catch {
            await endpoint.close()
            throw error
        }
    }
}

func parseCiphers(_ names: [String]) throws -> [TLSConfiguration.CipherSuite]? {
    guard !names.isEmpty else { return nil }
    return try names.map { name in
        switch name.lowercased().replacingOccurrences(of: "-", with: "").replacingOccurrences(of: "_", with: "") {
        case "aes128gcm", "tlsaes128gcmsha256": .aes128GCM
        case "aes256gcm", "tlsaes256gcmsha384": .aes256GCM
        case "chacha20", "chacha20poly1305", "tlschacha20poly1305sha256": .chacha20Poly1305
        default: throw ValidationError("unknown cipher '\(name)': use aes128gcm, aes256gcm or chacha20")
        }
    }
}
