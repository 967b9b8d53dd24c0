import ArgumentParser

// The old spellings of commands renamed in issue 14 ("one vocabulary"). Each is a hidden command
// that parses the new command's options and runs it, so scripts written against the old names
// keep working for one release; none is listed in `--help`.

/// `stoq bench-transport`: old spelling of `stoq bench transport`.
struct BenchTransportAlias: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-transport", abstract: "Old spelling of `stoq bench transport`.", shouldDisplay: false)
    @OptionGroup var command: BenchTransport
    func run() async throws { try await command.run() }
}

/// `stoq bench-content`: old spelling of `stoq bench content`.
struct BenchContentAlias: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-content", abstract: "Old spelling of `stoq bench content`.", shouldDisplay: false)
    @OptionGroup var command: BenchContent
    func run() throws { try command.run() }
}

/// `stoq bench-swarm`: old spelling of `stoq bench swarm`.
struct BenchSwarmAlias: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-swarm", abstract: "Old spelling of `stoq bench swarm`.", shouldDisplay: false)
    @OptionGroup var command: BenchSwarm
    func run() async throws { try await command.run() }
}

/// `stoq bench-edge`: old spelling of `stoq bench edge`.
struct BenchEdgeAlias: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-edge", abstract: "Old spelling of `stoq bench edge`.", shouldDisplay: false)
    @OptionGroup var command: BenchEdge
    func run() throws { try command.run() }
}

/// `stoq dht bench`: old spelling of `stoq bench dht`.
struct DHTBenchAlias: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Old spelling of `stoq bench dht`.", shouldDisplay: false)
    @OptionGroup var command: DHTCommand.Bench
    func run() async throws { try await command.run() }
}

/// `stoq relay bench`: old spelling of `stoq bench relay`.
struct RelayBenchAlias: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Old spelling of `stoq bench relay`.", shouldDisplay: false)
    @OptionGroup var command: RelayCommand.Bench
    func run() async throws { try await command.run() }
}

/// `stoq block bench-net`: old spelling of `stoq bench block`.
struct BlockBenchNetAlias: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-net", abstract: "Old spelling of `stoq bench block`.", shouldDisplay: false)
    @OptionGroup var command: BlockBenchNetCommand
    func run() async throws { try await command.run() }
}

/// `stoq block bench-erasure`: old spelling of `stoq bench erasure`.
struct BlockBenchErasureAlias: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-erasure", abstract: "Old spelling of `stoq bench erasure`.", shouldDisplay: false)
    @OptionGroup var command: BlockBenchErasureCommand
    func run() async throws { try await command.run() }
}

/// `stoq publish NAME ID`: old spelling of `stoq name publish`.
struct PublishAlias: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "publish", abstract: "Old spelling of `stoq name publish`.", shouldDisplay: false)
    @OptionGroup var command: Publish
    func run() async throws { try await command.run() }
}
