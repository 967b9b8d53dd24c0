import Foundation
import NIOCore
import STOQContent
import STOQExchange
import STOQTransport
import STOQWire

/// Why an origin refused an upload request: its ERROR code and message.
public struct UploadRefused: Error, Sendable, CustomStringConvertible {
    /// The ERROR code (``UploadProtocol``).
    public let code: UInt64
    /// The origin's message.
    public let message: String
    /// The origin's message.
    public var description: String { message }
}

extension PeerClient {
    /// Offers `tree` to the origin for pinning under `name`.
    /// - Returns: the upload's id and the indices of the chunks the origin lacks.
    /// - Throws: ``UploadRefused`` when the origin refuses (code 5: not a publisher), ``NodeError``
    ///   `.protocolViolation` for a malformed answer, transport errors.
    public func uploadOffer(_ tree: UploadTree, name: String, isPublic: Bool) async throws -> (id: UInt64, needed: [Int]) {
        let message = UploadMessage.offer(flags: isPublic ? .public : [], name: name, tree: tree.encode())
        switch try await uploadRequest(message.encoded()) {
        case .need(let id, _, let indices):
            guard indices.allSatisfy({ $0 < UInt64(tree.chunks.count) }) else {
                throw NodeError(.protocolViolation, "\(self.name) asked for a chunk the offer does not have")
            }
            return (id, indices.map { Int($0) })
        case let other:
            throw NodeError(.protocolViolation, "the origin answered UPLOAD_OFFER with \(other.frame().type)")
        }
    }

    /// Sends chunk `index` of upload `id`.
    /// - Returns: how many chunks the origin still lacks.
    public func uploadChunk(id: UInt64, index: Int, bytes: [UInt8]) async throws -> Int {
        var header = UploadMessage.chunk(uploadID: id, index: UInt64(index), length: UInt64(bytes.count)).encoded()
        header.writeBytes(bytes)
        switch try await uploadRequest(header) {
        case .need(let echoed, let remaining, _) where echoed == id:
            return Int(remaining)
        case let other:
            throw NodeError(.protocolViolation, "the origin answered UPLOAD_CHUNK with \(other.frame().type)")
        }
    }

    /// Commits upload `id`: the origin builds and pins the content.
    /// - Returns: the content id and the totals the origin reports.
    public func uploadCommit(id: UInt64) async throws -> (content: ContentID, totals: UploadMessage.Totals) {
        switch try await uploadRequest(UploadMessage.commit(uploadID: id).encoded()) {
        case .committed(let echoed, let wire, let totals) where echoed == id:
            guard let chunk = ChunkID(bytes: wire.bytes) else { throw NodeError(.protocolViolation, "the origin answered a commit with a bad content id") }
            return (ContentID(chunk), totals)
        case let other:
            throw NodeError(.protocolViolation, "the origin answered UPLOAD_COMMIT with \(other.frame().type)")
        }
    }

    /// Sends one upload request on its own stream and reads the origin's one answer (plain and
    /// sealed uploads alike; SealedUpload.swift).
    func uploadRequest(_ request: ByteBuffer) async throws -> UploadMessage {
        let stream = try await openRequestStream(priority: .bulk)
        try await stream.write(request)
        try await stream.finish()
        var decoder = FrameDecoder(maximumPayloadLength: UploadMessage.maximumAnswerLength)
        decoder.handle(bytes: try await stream.readAll(limit: UploadMessage.maximumAnswerLength + 16))
        guard let frame = try decoder.pollFrame() else {
            throw NodeError(.protocolViolation, "\(name) closed the stream without answering the upload request (is it an origin that takes uploads?)")
        }
        if UploadMessage.handles(frame.type) { return try UploadMessage.decode(frame) }
        if case .error(let code, let text) = try STOQMessage.decode(frame) { throw UploadRefused(code: code, message: text) }
        throw NodeError(.protocolViolation, "\(name) answered an upload request with \(frame.type)")
    }
}

/// What ``Uploader/upload(_:name:isPublic:read:)`` did.
public struct UploadReport: Sendable {
    /// The content id the origin pinned.
    public var content: ContentID
    /// Chunks in the content.
    public var chunks: Int
    /// Plaintext bytes of the content.
    public var bytes: Int64
    /// Chunks sent (the origin lacked them).
    public var sentChunks: Int
    /// Plaintext bytes sent.
    public var sentBytes: Int64
    /// Files in the content.
    public var files: Int
    /// 1 − sent bytes / content bytes: the share deduplication saved.
    public var saved: Double { bytes == 0 ? 0 : 1 - Double(sentBytes) / Double(bytes) }
}

/// The uploader's side: offers a scanned tree, sends the chunks the origin lacks (several at
/// once), and commits.
public struct Uploader: Sendable {
    /// The connection to the origin.
    public let client: PeerClient
    /// Chunks sent at once (at most the origin's 32 per upload).
    public let concurrency: Int
    /// Called after each chunk sent with (chunks sent, chunks to send).
    public let progress: (@Sendable (Int, Int) -> Void)?
    /// Called once the origin said what it lacks, and after each chunk sent, with (bytes sent,
    /// bytes to send): plaintext bytes of the chunks the origin asked for (progress bars).
    public var onBytes: (@Sendable (Int64, Int64) -> Void)? = nil

    /// Creates an uploader.
    public init(client: PeerClient, concurrency: Int = 8, progress: (@Sendable (Int, Int) -> Void)? = nil) {
        self.client = client
        self.concurrency = max(1, min(concurrency, 32))
        self.progress = progress
    }

    /// Uploads `tree` and pins it under `name` on the origin.
    /// - Parameter read: the plaintext bytes of chunk `i` of the tree.
    public func upload(_ tree: UploadTree, name: String, isPublic: Bool, read: @escaping @Sendable (Int) throws -> [UInt8]) async throws -> UploadReport {
        let (id, needed) = try await client.uploadOffer(tree, name: name, isPublic: isPublic)
        let client = self.client, progress = self.progress, total = needed.count
        var sentBytes: Int64 = 0
        let onBytes = self.onBytes
        let toSend = needed.reduce(Int64(0)) { $0 + Int64(tree.chunks.indices.contains($1) ? tree.chunks[$1].length : 0) }
        onBytes?(0, toSend)
        try await withThrowingTaskGroup(of: Int.self) { group in
            var next = 0, done = 0
            while next < needed.count || done < next {
                while next < needed.count && next - done < concurrency {
                    let index = needed[next]
                    next += 1
                    group.addTask {
                        let bytes = try read(index)
                        _ = try await client.uploadChunk(id: id, index: index, bytes: bytes)
                        return bytes.count
                    }
                }
                guard let n = try await group.next() else { break }
                sentBytes += Int64(n)
                done += 1
                progress?(done, total)
                onBytes?(sentBytes, toSend)
            }
        }
        let (content, totals) = try await client.uploadCommit(id: id)
        return UploadReport(content: content, chunks: tree.chunks.count, bytes: tree.bytes, sentChunks: needed.count, sentBytes: sentBytes, files: Int(totals.files))
    }
}
