import ArgumentParser

// The old spellings of commands renamed in issue 14 ("one vocabulary"). Each is a hidden command
// that parses the new command's options and runs it, so scripts written against the old names
// keep working for one release; none is listed in `--help`.

/// `stoq bench-transport`: old spelling of `stoq bench transport`.
struct BenchTransportAlias: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-transport", abstract: "Old spelling of `stoq bench transport`.", usage: "stoq bench-transport [<options>]", shouldDisplay: false)
    @OptionGroup var command: BenchTransport
    func run() async throws { try await command.run() }
}

/// `stoq bench-content`: old spelling of `stoq bench content`.
struct BenchContentAlias: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-content", abstract: "Old spelling of `stoq bench content`.", usage: "stoq bench-content --input <input> [<options>]", shouldDisplay: false)
    @OptionGroup var command: BenchContent
    func run() throws { try command.run() }
}

/// `stoq bench-swarm`: old spelling of `stoq bench swarm`.
struct BenchSwarmAlias: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-swarm", abstract: "Old spelling of `stoq bench swarm`.", usage: "stoq bench-swarm [<options>]", shouldDisplay: false)
    @OptionGroup var command: BenchSwarm
    func run() async throws { try await command.run() }
}

/// `stoq bench-edge`: old spelling of `stoq bench edge`.
struct BenchEdgeAlias: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-edge", abstract: "Old spelling of `stoq bench edge`.", usage: "stoq bench-edge [<options>]", shouldDisplay: false)
    @OptionGroup var command: BenchEdge
    func run() throws { try command.run() }
}

/// `stoq dht bench`: old spelling of `stoq bench dht`.
struct DHTBenchAlias: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Old spelling of `stoq bench dht`.", usage: "stoq dht bench [<options>]", shouldDisplay: false)
    @OptionGroup var command: DHTCommand.Bench
    func run() async throws { try await command.run() }
}

/// `stoq relay bench`: old spelling of `stoq bench relay`.
struct RelayBenchAlias: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Old spelling of `stoq bench relay`.", usage: "stoq relay bench [<options>]", shouldDisplay: false)
    @OptionGroup var command: RelayCommand.Bench
    func run() async throws { try await command.run() }
}

/// `stoq block bench-net`: old spelling of `stoq bench block`.
struct BlockBenchNetAlias: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-net", abstract: "Old spelling of `stoq bench block`.", usage: "stoq block bench-net [<options>]", shouldDisplay: false)
    @OptionGroup var command: BlockBenchNetCommand
    func run() async throws { try await command.run() }
}

/// `stoq block bench-erasure`: old spelling of `stoq bench erasure`.
struct BlockBenchErasureAlias: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-erasure", abstract: "Old spelling of `stoq bench erasure`.", usage: "stoq block bench-erasure [<options>]", shouldDisplay: false)
    @OptionGroup var command: BlockBenchErasureCommand
    func run() async throws { try await command.run() }
}

/// `stoq publish NAME ID`: old spelling of `stoq name publish`.
struct PublishAlias: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish", abstract: "Old spelling of `stoq name publish`.", usage: "stoq publish <name> <id> --cert <cert> --key <key> --ca <ca> [<options>]", shouldDisplay: false)
    @OptionGroup var command: Publish
    func run() async throws { try await command.run() }
}

/// Old spellings that ArgumentParser cannot take as hidden aliases, rewritten before parsing.
enum LegacySpellings {
    /// `stoq name set|sign … --version N`: the record's version was `--version` before `stoq
    /// --version` existed. ArgumentParser answers `--version` anywhere on the line with the
    /// program's version, so an alias cannot be declared; `Stoq.main` passes the arguments through
    /// here instead, which turns `--version N` (N a number) after `name set`/`name sign` into
    /// `--record-version N`. Anything else is returned unchanged.
    /// - Parameter arguments: the command line without the program name.
    static func rewrite(_ arguments: [String]) -> [String] {
        guard arguments.count > 2, arguments[0] == "name", ["set", "sign"].contains(arguments[1]) else { return arguments }
        var out = Array(arguments.prefix(2))
        var index = 2
        while index < arguments.count {
            let argument = arguments[index]
            if argument == "--" {
                out += arguments[index...]
                break
            }
            if argument == "--version", index + 1 < arguments.count, UInt64(arguments[index + 1]) != nil {
                out += ["--record-version", arguments[index + 1]]
                index += 2
                continue
            }
            if argument.hasPrefix("--version="), UInt64(argument.dropFirst("--version=".count)) != nil {
                out.append("--record-version=" + argument.dropFirst("--version=".count))
                index += 1
                continue
            }
            out.append(argument)
            index += 1
        }
        return out
    }
}
