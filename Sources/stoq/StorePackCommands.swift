import ArgumentParser
import Foundation
import STOQContent

extension StoreFormat: ExpressibleByArgument {}

extension StoreCommand {
    /// `stoq store migrate`: moves a store's chunk files into pack files.
    struct Migrate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move a store's chunk files (one file per chunk) into append-only pack files; safe to interrupt and run again.",
            discussion: """
                The store is switched to packs (a packs/ folder) first; each chunk file is read, checked \
                against its name, appended to a pack, and removed only after the pack and the index naming \
                the new place are durable. A damaged file is left for `stoq store verify --repair`.
                """)
        @OptionGroup var storeOptions: StoreOptions
        func run() throws {
            try reportingErrors {
                let store = try DiskChunkStore(directory: storeOptions.directory, format: .packs)
                let moved = try store.migrateToPacks()
                let f = try store.footprint()
                Console.shared.result("migrate: moved \(moved) chunk files into packs; the store now has \(f.packs) packs (\(humanBytes(f.packBytes)))")
            }
        }
    }
}
