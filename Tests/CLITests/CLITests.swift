import Foundation
import Testing

/// The `stoq` command line as a user meets it: the built binary run as a process, its help, the
/// certificate commands end to end, and its refusals (exit code and a message a person can act on).
/// The store commands are covered by `STOQContentTests/CLIStoreTests`; the node, network and
/// name commands by the journeys under `Tests/Journeys`.
@Suite struct CLITests {
    /// The `stoq` binary: `STOQ_BIN` if set, else the one built beside this test bundle, else the
    /// package's `.build/debug` or `.build/release`. A missing binary fails the test (it is built
    /// with the tests by `swift build --build-tests`).
    static func binary() throws -> String {
        if let path = ProcessInfo.processInfo.environment["STOQ_BIN"], !path.isEmpty { return path }
        var candidates = [String]()
        if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            candidates.append((exe as NSString).deletingLastPathComponent + "/stoq")
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        candidates += ["\(root)/.build/debug/stoq", "\(root)/.build/release/stoq"]
        guard let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw CLITestFailure("no stoq binary in \(candidates); build it with `swift build --product stoq` or set STOQ_BIN")
        }
        return found
    }

    struct Output {
        /// The exit code, or the signal's number when `signaled`.
        var status: Int32
        var signaled: Bool
        var stdout: String
        var stderr: String
    }

    /// Runs `stoq args…` with stdin closed and returns its exit status and output (collected in
    /// files, so that a chatty child can never block on a full pipe).
    static func stoq(_ args: [String]) throws -> Output {
        let dir = try tempDirectory("run")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        FileManager.default.createFile(atPath: dir + "/out", contents: nil)
        FileManager.default.createFile(atPath: dir + "/err", contents: nil)
        let out = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/out"))
        let err = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/err"))
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try binary())
        p.arguments = args
        p.standardOutput = out
        p.standardError = err
        p.standardInput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        try out.close()
        try err.close()
        return Output(
            status: p.terminationStatus, signaled: p.terminationReason == .uncaughtSignal,
            stdout: try String(contentsOfFile: dir + "/out", encoding: .utf8),
            stderr: try String(contentsOfFile: dir + "/err", encoding: .utf8))
    }

    static func tempDirectory(_ label: String) throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("stoq-cli-\(label)-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    /// A refusal is a non-zero exit with one readable line, not a Swift type dump or a trap.
    static func expectReadableRefusal(_ out: Output, saying phrase: String, exit: Int32? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(out.status != 0, "expected a refusal, got exit 0: \(out.stdout)", sourceLocation: sourceLocation)
        if let exit { #expect(out.status == exit, "exit \(out.status), expected \(exit): \(out.stderr)", sourceLocation: sourceLocation) }
        #expect(!out.signaled, "stoq died of signal \(out.status) (a trap?): \(out.stderr)", sourceLocation: sourceLocation)
        #expect(out.stderr.contains(phrase), "stderr lacks '\(phrase)': \(out.stderr)", sourceLocation: sourceLocation)
        for dump in ["Error(", "code: ", "Swift.", "Fatal error"] {
            #expect(!out.stderr.contains(dump), "stderr looks like a type dump ('\(dump)'): \(out.stderr)", sourceLocation: sourceLocation)
        }
    }

    // MARK: - Help

    /// Every `stoq WORD …` in the README's command table is a subcommand that `stoq --help` lists,
    /// and every `stoq WORD SUB …` whose WORD has subcommands names one that `stoq WORD --help` lists.
    @Test func helpListsEveryCommandOfTheREADME() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
        let readme = try String(contentsOfFile: root + "/README.md", encoding: .utf8)
        var commands = [[String]]()
        for line in readme.split(separator: "\n") where line.hasPrefix("| `stoq ") {
            let firstColumn = line.split(separator: "|", omittingEmptySubsequences: true).first ?? ""
            for (i, span) in firstColumn.split(separator: "`", omittingEmptySubsequences: false).enumerated() where i % 2 == 1 && span.hasPrefix("stoq ") {
                commands.append(span.split(separator: " ").dropFirst().prefix(2).map(String.init))
            }
        }
        #expect(commands.count >= 20, "found only \(commands.count) commands in the README's table")

        let help = try Self.stoq(["--help"])
        #expect(help.status == 0, "\(help.stderr)")
        let listed = Self.subcommands(inHelp: help.stdout)
        #expect(listed.count >= 15, "stoq --help lists only \(listed): \(help.stdout)")
        var subhelp = [String: Set<String>]()
        for command in commands {
            guard let word = command.first else { continue }
            #expect(listed.contains(word), "the README shows `stoq \(command.joined(separator: " "))` but `stoq --help` lists no '\(word)'")
            guard listed.contains(word), command.count == 2, let sub = command.last,
                  sub.allSatisfy({ $0.isLowercase || $0 == "-" }), sub.first?.isLetter == true else { continue }
            if subhelp[word] == nil {
                let out = try Self.stoq([word, "--help"])
                #expect(out.status == 0, "stoq \(word) --help: \(out.stderr)")
                subhelp[word] = Self.subcommands(inHelp: out.stdout)
            }
            // Only commands that have subcommands are checked for the second word (for the others
            // it is an argument, e.g. `stoq put PATH`).
            if let subs = subhelp[word], !subs.isEmpty {
                #expect(subs.contains(sub), "the README shows `stoq \(word) \(sub)` but `stoq \(word) --help` lists \(subs.sorted())")
            }
        }
        #expect(subhelp["certs"] == ["init-ca", "issue", "keygen", "show", "verify"], "\(subhelp["certs"] ?? [])")
    }

    /// The first word of each line in the help's SUBCOMMANDS section.
    static func subcommands(inHelp text: String) -> Set<String> {
        var inSection = false
        var names = Set<String>()
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.hasPrefix("SUBCOMMANDS:") { inSection = true; continue }
            guard inSection else { continue }
            // The section ends at its first blank line (a "See 'stoq help …'" hint may follow).
            if line.isEmpty || !line.hasPrefix(" ") { if names.isEmpty { continue } else { break } }
            // Subcommand lines are indented by two spaces; wrapped abstracts by more.
            guard line.hasPrefix("  "), !line.hasPrefix("   "), let name = line.split(separator: " ").first else { continue }
            names.insert(String(name))
        }
        return names
    }

    @Test func unknownCommandIsRefusedWithUsage() throws {
        let out = try Self.stoq(["frobnicate"])
        Self.expectReadableRefusal(out, saying: "frobnicate", exit: 2)
        #expect(out.stderr.contains("Usage") || out.stderr.contains("USAGE"), "\(out.stderr)")
    }

    /// `stoq --version` prints one line on stdout, the software and wire protocol versions, and exits 0.
    @Test func versionIsOneLineOnStdout() throws {
        let out = try Self.stoq(["--version"])
        #expect(out.status == 0 && !out.signaled, "\(out.stderr)")
        #expect(out.stdout.hasPrefix("stoq ") && out.stdout.contains("(stoq/1)"), "\(out.stdout)")
        #expect(out.stdout.split(separator: "\n").count == 1, "\(out.stdout)")
    }

    // MARK: - Certificates

    /// init-ca, issue, show and verify agree on the node id; verify refuses another CA's
    /// certificate; init-ca never silently replaces a CA.
    @Test func certsRoundTrip() throws {
        let dir = try Self.tempDirectory("certs")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let ca = dir + "/ca", nodes = dir + "/nodes", other = dir + "/other"

        let initCA = try Self.stoq(["certs", "init-ca", "--out", ca, "--name", "CLI test CA"])
        #expect(initCA.status == 0, "\(initCA.stderr)")
        #expect(FileManager.default.fileExists(atPath: ca + "/ca.pem") && FileManager.default.fileExists(atPath: ca + "/ca.key"))
        #expect(initCA.stdout.contains("CLI test CA"), "\(initCA.stdout)")

        let again = try Self.stoq(["certs", "init-ca", "--out", ca])
        Self.expectReadableRefusal(again, saying: "--force")
        let caBefore = try String(contentsOfFile: ca + "/ca.pem", encoding: .utf8)

        let issue = try Self.stoq(["certs", "issue", "--ca", ca, "--name", "edge-1", "--region", "eu-west", "--ip", "::1",
                                   "--dns", "localhost", "--hours", "2", "--out", nodes])
        #expect(issue.status == 0, "\(issue.stderr)")
        let issuedID = try #require(Self.nodeID(after: "id ", in: issue.stdout), "no node id in: \(issue.stdout)")
        #expect(issuedID.count == 64 && issuedID.allSatisfy(\.isHexDigit), "\(issuedID)")
        #expect(try String(contentsOfFile: ca + "/ca.pem", encoding: .utf8) == caBefore, "issuing changed the CA")

        let show = try Self.stoq(["certs", "show", nodes + "/edge-1.pem"])
        #expect(show.status == 0, "\(show.stderr)")
        #expect(Self.nodeID(after: "node id:", in: show.stdout) == issuedID, "\(show.stdout)")
        #expect(show.stdout.contains("edge-1") && show.stdout.contains("eu-west") && show.stdout.contains("localhost"), "\(show.stdout)")
        #expect(show.stdout.contains("ca:        false"), "\(show.stdout)")
        let showCA = try Self.stoq(["certs", "show", ca + "/ca.pem"])
        #expect(showCA.status == 0 && showCA.stdout.contains("ca:        true"), "\(showCA.stdout)\(showCA.stderr)")

        let verify = try Self.stoq(["certs", "verify", "--ca", ca + "/ca.pem", nodes + "/edge-1.pem"])
        #expect(verify.status == 0, "\(verify.stderr)")
        #expect(Self.nodeID(after: "node id ", in: verify.stdout) == issuedID, "\(verify.stdout)")

        // A certificate of another network is refused, with a message and a non-zero exit.
        #expect(try Self.stoq(["certs", "init-ca", "--out", other]).status == 0)
        let foreign = try Self.stoq(["certs", "verify", "--ca", other + "/ca.pem", nodes + "/edge-1.pem"])
        #expect(foreign.status != 0 && !foreign.signaled, "verify of another CA's certificate exited \(foreign.status): \(foreign.stdout)")
        #expect(!foreign.stdout.contains("ok:"), "\(foreign.stdout)")
        #expect(!foreign.stderr.isEmpty && !foreign.stderr.contains("Fatal error"), "\(foreign.stderr)")

        // Two issues of the same name are two keys, two node ids.
        let reissue = try Self.stoq(["certs", "issue", "--ca", ca, "--name", "edge-2", "--out", nodes])
        #expect(reissue.status == 0, "\(reissue.stderr)")
        #expect(Self.nodeID(after: "id ", in: reissue.stdout) != issuedID)
    }

    /// The 64-hex-digit word that follows `marker` in `text`.
    static func nodeID(after marker: String, in text: String) -> String? {
        guard let range = text.range(of: marker) else { return nil }
        let word = text[range.upperBound...].drop(while: { $0 == " " }).prefix(while: { !$0.isWhitespace })
        return word.count == 64 ? String(word) : nil
    }

    @Test func certsRefuseBadArguments() throws {
        let dir = try Self.tempDirectory("certs-bad")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try Self.stoq(["certs", "init-ca", "--out", dir + "/ca"]).status == 0)

        // An IPv4 address (or anything that is not IPv6) as a subject alternative name.
        for bad in ["10.0.0.1", "::1::2", "localhost"] {
            let out = try Self.stoq(["certs", "issue", "--ca", dir + "/ca", "--name", "n", "--ip", bad, "--out", dir + "/n"])
            Self.expectReadableRefusal(out, saying: "not an IPv6 address")
            #expect(!FileManager.default.fileExists(atPath: dir + "/n/n.pem"), "a certificate was written for --ip \(bad)")
        }
        // --days and --hours together are a usage error (exit code 2).
        let both = try Self.stoq(["certs", "issue", "--ca", dir + "/ca", "--name", "n", "--days", "1", "--hours", "1", "--out", dir + "/n"])
        Self.expectReadableRefusal(both, saying: "--days or --hours", exit: 2)
        // A missing CA directory and a missing certificate file.
        let noCA = try Self.stoq(["certs", "issue", "--ca", dir + "/nowhere", "--name", "n", "--out", dir + "/n"])
        #expect(noCA.status != 0 && !noCA.signaled && noCA.stderr.contains("nowhere"), "\(noCA.status) \(noCA.stderr)")
        let noFile = try Self.stoq(["certs", "show", dir + "/missing.pem"])
        #expect(noFile.status != 0 && !noFile.signaled && noFile.stderr.contains("missing.pem"), "\(noFile.status) \(noFile.stderr)")
        // A required option left out names the option.
        let noName = try Self.stoq(["certs", "issue", "--ca", dir + "/ca", "--out", dir + "/n"])
        Self.expectReadableRefusal(noName, saying: "--name", exit: 2)
    }

    // MARK: - Addresses

    /// STOQ is IPv6-only: every option that takes a peer address refuses IPv4 and malformed text
    /// before doing anything, with a usage error (exit 2) that says what an address looks like.
    @Test func addressOptionsRefuseAnythingButIPv6() throws {
        let dir = try Self.tempDirectory("addr")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let id = "stoq:" + String(repeating: "ab", count: 32)
        let cases: [[String]] = [
            ["node", "--name", "n", "--listen", "127.0.0.1:4433", "--cert", "c", "--key", "k", "--ca", "ca", "--store", dir + "/s"],
            ["node", "--name", "n", "--listen", "[::1]", "--cert", "c", "--key", "k", "--ca", "ca", "--store", dir + "/s"],
            ["node", "--name", "n", "--listen", "[::1]:70000", "--cert", "c", "--key", "k", "--ca", "ca", "--store", dir + "/s"],
            ["get", id, "-o", dir + "/out", "--store", dir + "/gs", "--peers", "127.0.0.1:4433", "--cert", "c", "--key", "k", "--ca", "ca"],
            ["get", id, "-o", dir + "/out", "--store", dir + "/gs", "--peers", "[::1]:4433,localhost:4433", "--cert", "c", "--key", "k", "--ca", "ca"],
            ["status", "--node", "10.1.2.3:4433", "--cert", "c", "--key", "k", "--ca", "ca"],
            ["node", "--name", "n", "--listen", "[::1]:0", "--cert", "c", "--key", "k", "--ca", "ca", "--store", dir + "/s", "--http", "127.0.0.1:8443"],
            ["node", "--name", "n", "--listen", "[::1]:0", "--cert", "c", "--key", "k", "--ca", "ca", "--store", dir + "/s", "--http", "[::ffff:10.0.0.1]:443"],
            ["node", "--name", "n", "--listen", "[::1]:0", "--cert", "c", "--key", "k", "--ca", "ca", "--store", dir + "/s", "--http", "[::1]"],
        ]
        for args in cases {
            let out = try Self.stoq(args)
            Self.expectReadableRefusal(out, saying: "IPv6", exit: 2)
            #expect(!FileManager.default.fileExists(atPath: dir + "/out"), "stoq \(args) wrote output")
        }
        #expect(!FileManager.default.fileExists(atPath: dir + "/s"), "a refused node created its store")
    }

    /// `stoq get --peers` refuses a source retry window or an idle timeout out of range, with a
    /// usage error that names the option, before it dials anything.
    @Test func getRefusesARetryWindowOrIdleTimeoutOutOfRange() throws {
        let dir = try Self.tempDirectory("retry")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let id = "stoq:" + String(repeating: "ab", count: 32)
        for (flag, value) in [("--source-retry-seconds", "0"), ("--source-retry-seconds", "86401"), ("--idle-timeout", "0"), ("--idle-timeout", "3601")] {
            let out = try Self.stoq(["get", id, "-o", dir + "/out", "--store", dir + "/gs", "--peers", "[::1]:4433",
                                     "--cert", "c", "--key", "k", "--ca", "ca", flag, value])
            Self.expectReadableRefusal(out, saying: flag, exit: 2)
            #expect(!FileManager.default.fileExists(atPath: dir + "/out"), "stoq get \(flag) \(value) wrote output")
        }
    }
}

/// A precondition of a CLI test that does not hold (for example, no `stoq` binary).
struct CLITestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
