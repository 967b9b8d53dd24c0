import NIOCore

/// Uploading content into a running origin (docs/PROTOCOL.md, "Uploading content"): an uploader
/// offers the shape and chunk hashes of a file or directory, the origin answers with the chunks it
/// lacks, the uploader sends those, and a commit makes the origin build and pin the content.
///
/// | type | name | payload |
/// | --- | --- | --- |
/// | 0x18 | UPLOAD_OFFER | `flags:varint` (bit 0: public, bit 1: sealed) `name:string (≤ 255)` `tree` (the rest, ≤ 8 MiB) |
/// | 0x19 | UPLOAD_NEED | `uploadID:u64` `remaining:varint` `count:varint` `index:varint × count` |
/// | 0x1A | UPLOAD_CHUNK | `uploadID:u64` `index:varint` `length:varint (1 … 16 MiB; a plain upload's ≤ 1 MiB)`, then `length` raw bytes and FIN |
/// | 0x1B | UPLOAD_COMMIT | request: `uploadID:u64`; answer: `uploadID:u64` `contentID:bytes32` `files` `bytes` `chunks` `storedBytes` (varints) |
public enum UploadMessage: Hashable, Sendable {
    /// Offers a tree (STOQContent's `UploadTree` encoding) to be pinned under `name`.
    case offer(flags: UploadFlags, name: String, tree: [UInt8])
    /// The chunks (indices into the offer's chunk list) the origin still lacks: every one in the
    /// answer to an offer; none (`indices` empty) in the answer to a chunk. `remaining` counts the
    /// distinct chunks still missing.
    case need(uploadID: UInt64, remaining: UInt64, indices: [UInt64])
    /// The header of one chunk's bytes (`length` raw bytes follow the frame on the stream).
    case chunk(uploadID: UInt64, index: UInt64, length: UInt64)
    /// Asks the origin to build and pin the offered content (all its chunks stored).
    case commit(uploadID: UInt64)
    /// The answer to a commit: the content id and what the upload stored.
    case committed(uploadID: UInt64, content: WireID, totals: Totals)

    /// Offer flags.
    public struct UploadFlags: OptionSet, Hashable, Sendable {
        public let rawValue: UInt64
        public init(rawValue: UInt64) { self.rawValue = rawValue }
        /// Public content: sealed with a read key of its own, which the origin hands to its nodes.
        public static let `public` = UploadFlags(rawValue: 1)
        /// Sealed content, sealed by the uploader: the offer's tree is the content's root sealed
        /// index (`STQE`), each chunk is sent as stored and checked against its id.
        public static let sealed = UploadFlags(rawValue: 2)
    }

    /// What a committed upload amounts to.
    public struct Totals: Hashable, Sendable {
        /// Regular files.
        public var files: UInt64
        /// Plaintext bytes.
        public var bytes: UInt64
        /// Data chunks.
        public var chunks: UInt64
        /// Bytes the commit wrote (manifests).
        public var storedBytes: UInt64
        /// Creates totals.
        public init(files: UInt64, bytes: UInt64, chunks: UInt64, storedBytes: UInt64) {
            self.files = files
            self.bytes = bytes
            self.chunks = chunks
            self.storedBytes = storedBytes
        }
    }

    /// Frame types.
    public enum Types {
        public static let offer = FrameType(rawValue: 0x18)
        public static let need = FrameType(rawValue: 0x19)
        public static let chunk = FrameType(rawValue: 0x1A)
        public static let commit = FrameType(rawValue: 0x1B)
    }

    /// The most chunk indices (and chunks) of one upload.
    public static let maximumChunks: UInt64 = 131_072
    /// The largest chunk: a stored chunk's limit (GET_CHUNK's). A plain upload's chunks are at most
    /// 1 MiB (the offer's tree says so); a sealed upload sends stored chunks, which may be larger.
    public static let maximumChunkLength: UInt64 = 16 << 20
    /// The longest tree encoding in an offer.
    public static let maximumTreeLength = 8 << 20
    /// The longest name.
    public static let maximumNameLength = 255
    /// The longest payload of any of these frames (an offer).
    public static let maximumPayloadLength = maximumTreeLength + 512
    /// The longest answer frame's payload (a NEED listing every chunk, varints of ≤ 4 bytes).
    public static let maximumAnswerLength = Int(maximumChunks) * 4 + 64

    /// Whether `type` is one of these messages.
    public static func handles(_ type: FrameType) -> Bool { (0x18...0x1B).contains(type.rawValue) }

    /// Encodes the message as one frame.
    public func frame() -> Frame {
        var w = WireWriter()
        let type: FrameType
        switch self {
        case .offer(let flags, let name, let tree):
            type = Types.offer
            w.varint(flags.rawValue)
            w.string(String(name.utf8.prefix(Self.maximumNameLength)) ?? "upload")
            w.bytes(tree)
        case .need(let id, let remaining, let indices):
            type = Types.need
            w.integer(id)
            w.varint(min(remaining, VarInt.max))
            w.varint(UInt64(indices.count))
            for i in indices { w.varint(min(i, VarInt.max)) }
        case .chunk(let id, let index, let length):
            type = Types.chunk
            w.integer(id)
            w.varint(min(index, VarInt.max))
            w.varint(min(length, VarInt.max))
        case .commit(let id):
            type = Types.commit
            w.integer(id)
        case .committed(let id, let content, let t):
            type = Types.commit
            w.integer(id)
            w.bytes(content.bytes)
            for v in [t.files, t.bytes, t.chunks, t.storedBytes] { w.varint(min(v, VarInt.max)) }
        }
        return Frame(type: type, payload: w.buffer)
    }

    /// The frame's encoding.
    public func encoded() -> ByteBuffer {
        var out = ByteBuffer()
        frame().encode(into: &out)
        return out
    }

    /// Decodes one of these frames. An UPLOAD_COMMIT of 8 bytes is the request; a longer one the answer.
    /// - Throws: ``WireError`` for a malformed payload or a value out of bounds, `.unknownType` for another type.
    public static func decode(_ frame: Frame) throws(WireError) -> UploadMessage {
        var r = WireReader(frame.payload, context: "\(frame.type)")
        let message: UploadMessage
        switch frame.type {
        case Types.offer:
            let flags = UploadFlags(rawValue: try r.varint("flags"))
            let name = try r.string("name", max: maximumNameLength)
            guard r.remaining <= maximumTreeLength else { throw WireError(.tooLong, "an upload offer's tree of \(r.remaining) bytes; the limit is \(maximumTreeLength)") }
            var rest = r.rest()
            message = .offer(flags: flags, name: name, tree: rest.readBytes(length: rest.readableBytes) ?? [])
        case Types.need:
            let id: UInt64 = try r.integer("uploadID")
            let remaining = try r.varint("remaining", max: maximumChunks)
            let count = try r.varint("count", max: maximumChunks)
            guard UInt64(r.remaining) >= count else { throw WireError(.truncated, "\(frame.type) lists \(count) indices in \(r.remaining) bytes") }
            var indices: [UInt64] = []
            indices.reserveCapacity(Int(count))
            for _ in 0..<count { indices.append(try r.varint("index", max: maximumChunks - 1)) }
            message = .need(uploadID: id, remaining: remaining, indices: indices)
        case Types.chunk:
            let id: UInt64 = try r.integer("uploadID")
            let index = try r.varint("index", max: maximumChunks - 1)
            let length = try r.varint("length", max: maximumChunkLength)
            guard length > 0 else { throw WireError(.malformed, "\(frame.type).length is 0; chunks are 1 to \(maximumChunkLength) bytes") }
            message = .chunk(uploadID: id, index: index, length: length)
        case Types.commit:
            let id: UInt64 = try r.integer("uploadID")
            if r.remaining == 0 {
                message = .commit(uploadID: id)
            } else {
                let content = WireID(try r.bytes("contentID", count: 32))!
                var values: [UInt64] = []
                for field in ["files", "bytes", "chunks", "storedBytes"] { values.append(try r.varint(field)) }
                message = .committed(uploadID: id, content: content, totals: Totals(files: values[0], bytes: values[1], chunks: values[2], storedBytes: values[3]))
            }
        default:
            throw WireError(.unknownType, "frame \(frame.type) is not an upload message")
        }
        try r.finish()
        return message
    }

    /// Fuzz entry point: decodes arbitrary bytes as frames; whatever decodes must survive a round trip.
    public static func fuzz(_ bytes: [UInt8]) {
        var decoder = FrameDecoder(maximumPayloadLength: 1 << 16)
        decoder.handle(bytes: ByteBuffer(bytes: bytes))
        while true {
            guard let frame = try? decoder.pollFrame() else { return }
            guard let message = try? decode(frame) else { continue }
            let again = try? decode(message.frame())
            precondition(again == message, "an upload message did not survive a round trip")
        }
    }
}
