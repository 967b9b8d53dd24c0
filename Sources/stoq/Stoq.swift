import ArgumentParser

@main
struct Stoq: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stoq",
        abstract: "STOQ: secure transport over QUIC/IPv6 and a content-delivery network.",
        subcommands: [
            Certs.self,
            BenchTransport.self,
        ]
    )
}
