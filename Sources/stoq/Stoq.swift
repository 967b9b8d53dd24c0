import ArgumentParser
import STOQ

@main
struct Stoq: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stoq",
        abstract: "STOQ: secure transport over QUIC/IPv6 and a content-delivery network.",
        version: STOQVersion.line,
        // One command per line, grouped by layer, so that additions merge cleanly.
        subcommands: [
            // identity
            Certs.self,
            Init.self,
            CACommand.self,
            // transport
            Serve.self,
            Fetch.self,
            BenchTransportAlias.self,
            BenchCommand.self,
            // content
            Put.self,
            Get.self,
            Share.self,
            ReaderCommand.self,
            Chunk.self,
            Ls.self,
            PinCommand.self,
            Unpin.self,
            GC.self,
            StoreCommand.self,
            BenchContentAlias.self,
            // swarm
            BenchSwarmAlias.self,
            // network
            NodeCommand.self,
            StatusCommand.self,
            Demo.self,
            // edge
            BenchEdgeAlias.self,
            PublishAlias.self,
            Resolve.self,
            Purge.self,
            Edges.self,
            // nexus
            CTCommand.self,
            NameCommand.self,
            DHTCommand.self,
            ResolveCommand.self,
            RelayCommand.self,
            // hypermesh
            BlockCommand.self,
            // security (issue 15)
            GrantCommand.self,
            AuditCommand.self,
        ]
    )
}
