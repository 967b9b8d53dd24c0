import ArgumentParser

@main
struct Stoq: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stoq",
        abstract: "STOQ: secure transport over QUIC/IPv6 and a content-delivery network.",
        subcommands: [
            // identity
            Certs.self,
            // content
            Put.self, Get.self, Chunk.self, Ls.self, PinCommand.self, Unpin.self, GC.self, StoreCommand.self,
            BenchContent.self,
        ]
    )
}
