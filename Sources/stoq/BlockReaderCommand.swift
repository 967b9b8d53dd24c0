import ArgumentParser
import Crypto
import Foundation
import HyperMesh
import STOQ

/// `stoq block reader`: prints the public half of this block directory's reader key, the key a
/// writer seals a block for with `stoq block put --reader FILE` so that this directory (on this or
/// another machine) can read the block from its id alone.
struct BlockReaderCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reader",
        abstract: "Print this block directory's reader public key (PEM), for `stoq block put --reader FILE` on the writer's side.",
        discussion: """
            A block is encrypted, and its key is sealed in the manifest for each reader key the writer \
            named: its own block directory's reader.key, and every --reader FILE given to `stoq block put`. \
            To read a block from another block directory or machine, either copy the writer's \
            reader.key (mode 0600) into that directory, or run `stoq block reader --blocks DIR > me.pem` \
            there and have the writer store the block with `stoq block put FILE --reader me.pem ...`. \
            Then `stoq block get ID -o OUT --node ADDR,...` (or --bootstrap ADDR) reads it with no local record.
            """
    )

    @Option(help: "Block directory (its reader.key is created if missing); default $STOQ_BLOCKS or ~/.stoq/blocks.")
    var blocks: String?

    func run() async throws {
        let directory = try BlockDirectory(path: blocks ?? BlockDirectory.defaultPath)
        let key = try directory.readerKey()
        Console.shared.result(key.publicKey.pemRepresentation)
        Console.shared.note("reader \(SealedBlockKey.readerID(key.publicKey).short) of \(directory.path)")
    }
}

/// Reads reader keys given to `stoq block put --reader`: a P-256 public key in PEM (what
/// `stoq block reader` prints), or a reader.key itself (its public half is used).
func readReaderKeys(_ paths: [String]) throws -> [P256.KeyAgreement.PublicKey] {
    try paths.map { path in
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ValidationError("cannot read the reader key \(path)")
        }
        if let key = try? P256.KeyAgreement.PublicKey(pemRepresentation: text) { return key }
        if let key = try? P256.KeyAgreement.PrivateKey(pemRepresentation: text) { return key.publicKey }
        throw ValidationError("\(path) is not a P-256 public key in PEM; give what `stoq block reader` prints")
    }
}

/// Where `stoq block get` reads a block from: its local record when this block directory has one,
/// else the storage nodes named (`--node`, and the providers found through `--bootstrap`), which
/// are asked for the block's manifest and holders.
func readBlock(
    _ id: String, client: BlockClient, nodes: String?, bootstrap: String?, options: BlockClientOptions,
    progress: (@Sendable (BlockTransferProgress) -> Void)? = nil
) async throws -> (BlockID, BlockGetReport) {
    let block = try client.directory.resolve(id)
    if client.directory.contains(block) { return (block, try await client.get(block, progress: progress)) }
    guard nodes != nil || bootstrap != nil else {
        throw CLIError(
            "no record of block \(block.short) in \(client.directory.path) (it was stored from another block directory or machine); "
                + "to read it from the network give the storage nodes it was stored on: --node ADDR,... or --bootstrap ADDR")
    }
    let addresses = try await storageNodeAddresses(nodes: nodes, dht: bootstrap, client: options)
    Console.shared.note("no local record of block \(block.short): asking \(Set(addresses).count) storage nodes for its manifest and holders")
    return (block, try await client.get(block, from: addresses))
}

/// What `stoq block verify` checks: the recorded holders when this block directory has the
/// block's record, else the holders found on the storage nodes named (as `readBlock` finds them).
func verifyBlock(
    _ id: String, client: BlockClient, nodes: String?, bootstrap: String?, options: BlockClientOptions
) async throws -> BlockVerifyReport {
    let block = try client.directory.resolve(id)
    if client.directory.contains(block) || (nodes == nil && bootstrap == nil) { return try await client.verify(block) }
    let addresses = try await storageNodeAddresses(nodes: nodes, dht: bootstrap, client: options)
    Console.shared.note("no local record of block \(block.short): asking \(Set(addresses).count) storage nodes for its manifest and holders")
    return try await client.verify(block, from: addresses)
}

/// Before `stoq block repair` of a block this block directory has no record of: finds the block
/// on the storage nodes given and saves its record here (saying so), so the repair can run.
func adoptIfUnrecorded(_ block: BlockID, client: BlockClient, nodes: [PeerAddress]) async throws {
    guard !client.directory.contains(block), !nodes.isEmpty else { return }
    let record = try await client.adopt(block, from: nodes)
    Console.shared.note(
        "no local record of block \(block.short): found \(record.holders.count) shard holders among \(Set(nodes).count) storage nodes; "
            + "record saved in \(client.directory.path)")
}
