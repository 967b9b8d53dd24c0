import Crypto
import Foundation
import NIOCore
import STOQIdentity
import STOQWire
import X509

/// What a grant lets its holder do (docs/PROTOCOL.md, "Access grants").
public struct AccessRights: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }
    /// Read content in scope (used with the private-content flow).
    public static let read = AccessRights(rawValue: 1 << 0)
    /// Publish into an origin: UPLOAD_OFFER…UPLOAD_COMMIT, NAME_PUBLISH.
    public static let publish = AccessRights(rawValue: 1 << 1)
    /// PURGE content in scope.
    public static let purge = AccessRights(rawValue: 1 << 2)
    /// Have a relay carry streams (RELAY_OPEN).
    public static let relay = AccessRights(rawValue: 1 << 3)
    /// Read the node's STATUS.
    public static let status = AccessRights(rawValue: 1 << 4)
    /// Every right.
    public static let all: AccessRights = [.read, .publish, .purge, .relay, .status]

    /// The rights in order, with their names.
    public static let named: [(String, AccessRights)] = [("read", .read), ("publish", .publish), ("purge", .purge), ("relay", .relay), ("status", .status)]

    /// Parses `read,publish,…` (or `all`).
    /// - Throws: ``AccessError`` `.malformed` naming an unknown right.
    public init(parsing text: String) throws(AccessError) {
        var rights: AccessRights = []
        for word in text.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }) where !word.isEmpty {
            if word == "all" { rights.formUnion(.all); continue }
            guard let right = Self.named.first(where: { $0.0 == word })?.1 else {
                throw AccessError(.malformed, "unknown right '\(word)'; the rights are read, publish, purge, relay, status (or all)")
            }
            rights.insert(right)
        }
        guard !rights.isEmpty else { throw AccessError(.malformed, "a grant needs at least one right (read, publish, purge, relay, status)") }
        self = rights
    }

    /// `read,publish` (or `none`).
    public var description: String {
        let names = Self.named.filter { contains($0.1) }.map(\.0)
        return names.isEmpty ? "none" : names.joined(separator: ",")
    }
}

/// One entry of a grant's scope. A block's scope admits a request when it is empty or when one
/// of its entries does; a grant admits it when every block does (so narrowing only narrows).
public enum ScopeEntry: Hashable, Sendable, CustomStringConvertible {
    /// One content (its 32-byte content id): matches requests about that content.
    case content([UInt8])
    /// A name prefix: matches mutable names and upload names that start with it (plain string prefix).
    case namePrefix(String)
    /// A path prefix: matches paths equal to it or below it (whole `/`-separated components).
    case pathPrefix(String)

    /// Wire kinds: 1 content, 2 name prefix, 3 path prefix.
    var kind: UInt64 {
        switch self {
        case .content: 1
        case .namePrefix: 2
        case .pathPrefix: 3
        }
    }

    /// Parses `content:HEX64`, `name:PREFIX` or `path:PREFIX`.
    public init(parsing text: String) throws(AccessError) {
        guard let colon = text.firstIndex(of: ":") else {
            throw AccessError(.malformed, "a scope is content:ID, name:PREFIX or path:PREFIX, got '\(text)'")
        }
        let kind = text[..<colon].lowercased(), value = String(text[text.index(after: colon)...])
        switch kind {
        case "content":
            guard let id = Hex.decode(value), id.count == 32 else {
                throw AccessError(.malformed, "a content scope is content: and 64 hex characters (a content id), got '\(value)'")
            }
            self = .content(id)
        case "name", "path":
            guard !value.isEmpty, value.utf8.count <= AccessGrant.maximumPrefixLength else {
                throw AccessError(.malformed, "a \(kind) prefix is 1 to \(AccessGrant.maximumPrefixLength) bytes")
            }
            self = kind == "name" ? .namePrefix(value) : .pathPrefix(value)
        default:
            throw AccessError(.malformed, "a scope is content:ID, name:PREFIX or path:PREFIX, got '\(text)'")
        }
    }

    /// `content:…`, `name:…` or `path:…`.
    public var description: String {
        switch self {
        case .content(let id): "content:" + Hex.encode(id)
        case .namePrefix(let p): "name:" + p
        case .pathPrefix(let p): "path:" + p
        }
    }

    /// Whether this entry admits `item`.
    public func admits(_ item: AccessItem) -> Bool {
        switch (self, item) {
        case (.content(let a), .content(let b)): return a == b
        case (.namePrefix(let p), .name(let n)): return n.hasPrefix(p)
        case (.pathPrefix(let p), .path(let q)):
            let prefix = p.hasSuffix("/") ? p : p + "/"
            return q == p || q.hasPrefix(prefix)
        default: return false
        }
    }
}

/// What a request is about, as a scope sees it.
public enum AccessItem: Hashable, Sendable, CustomStringConvertible {
    /// A content id (32 bytes).
    case content([UInt8])
    /// A mutable name or an upload name.
    case name(String)
    /// A path.
    case path(String)

    public var description: String {
        switch self {
        case .content(let id): "content " + Hex.encode(id)
        case .name(let n): "name '\(n)'"
        case .path(let p): "path '\(p)'"
        }
    }
}

/// The limits one block sets: rights, expiry, peer binding, scope.
public struct GrantCaveats: Hashable, Sendable {
    /// The rights (a narrowing block's rights intersect the earlier ones).
    public var rights: AccessRights
    /// Unix seconds after which the grant is void (0 in a narrowing block: unchanged).
    public var notAfter: UInt64
    /// The only peer (node id) that may present the grant; nil: any.
    public var peer: NodeID?
    /// The scope; empty: no limit from this block.
    public var scope: [ScopeEntry]

    /// Creates caveats.
    public init(rights: AccessRights, notAfter: UInt64, peer: NodeID? = nil, scope: [ScopeEntry] = []) {
        self.rights = rights
        self.notAfter = notAfter
        self.peer = peer
        self.scope = scope
    }

    func write(_ w: inout WireWriter) {
        w.varint(rights.rawValue)
        w.varint(notAfter)
        w.lengthPrefixedBytes(peer?.bytes ?? [])
        w.varint(UInt64(scope.count))
        for entry in scope {
            w.varint(entry.kind)
            switch entry {
            case .content(let id): w.lengthPrefixedBytes(id)
            case .namePrefix(let p), .pathPrefix(let p): w.string(p)
            }
        }
    }

    static func read(_ r: inout WireReader) throws(WireError) -> GrantCaveats {
        let rights = try r.varint("rights", max: AccessRights.all.rawValue)
        let notAfter = try r.varint("notAfter")
        let peerBytes = try r.lengthPrefixedBytes("peer", max: 32)
        guard peerBytes.isEmpty || peerBytes.count == 32 else { throw WireError(.malformed, "a bound peer is a 32-byte node id") }
        let count = try r.varint("scopeCount", max: UInt64(AccessGrant.maximumScopeEntries))
        var scope: [ScopeEntry] = []
        for _ in 0..<count {
            let kind = try r.varint("scopeKind", max: 3)
            switch kind {
            case 1:
                let id = try r.lengthPrefixedBytes("content", max: 32)
                guard id.count == 32 else { throw WireError(.malformed, "a content scope is a 32-byte content id") }
                scope.append(.content(id))
            case 2, 3:
                let p = try r.string("prefix", max: AccessGrant.maximumPrefixLength)
                guard !p.isEmpty else { throw WireError(.malformed, "a scope prefix is not empty") }
                scope.append(kind == 2 ? .namePrefix(p) : .pathPrefix(p))
            default:
                throw WireError(.malformed, "unknown scope kind \(kind)")
            }
        }
        return GrantCaveats(rights: AccessRights(rawValue: rights), notAfter: notAfter, peer: peerBytes.isEmpty ? nil : try? NodeID(bytes: peerBytes), scope: scope)
    }
}

/// An extension a grant carries and signs: `(type, bytes ≤ 4096)`. Type 1 is a wrapped content
/// key (defined by the private-content flow); others are carried unread.
public struct GrantExtension: Hashable, Sendable {
    /// The extension's type.
    public var type: UInt64
    /// Its bytes.
    public var bytes: [UInt8]
    /// Creates an extension.
    public init(type: UInt64, bytes: [UInt8]) {
        self.type = type
        self.bytes = bytes
    }
}

/// An access grant: a publisher-signed, offline-attenuable capability (docs/PROTOCOL.md, "Access grants").
///
/// The root block (grant id, publisher id, the publisher's certificate, caveats, extensions, the
/// next block's Ed25519 public key) is signed with the publisher's certificate key (ECDSA P-256).
/// Each narrowing appends a block of caveats signed with the previous block's next key; the token
/// carries the last block's private key (``secret``) so its holder can narrow it again. The
/// effective grant is the intersection of all blocks. Decoding bounds every field; ``verify(trust:now:revoked:)``
/// checks the certificate and every signature.
public struct AccessGrant: Hashable, Sendable {
    /// One signed block as it travels.
    public struct Block: Hashable, Sendable {
        /// The signed body.
        public let body: [UInt8]
        /// Its signature (root: DER ECDSA P-256; others: Ed25519, 64 bytes).
        public let signature: [UInt8]
        /// The body's caveats.
        public let caveats: GrantCaveats
        /// The Ed25519 public key that signs the next block.
        public let nextKey: [UInt8]
    }

    /// The 16-byte grant id.
    public let grantID: [UInt8]
    /// The publisher's node id (SHA-256 of its certificate's SubjectPublicKeyInfo).
    public let publisher: NodeID
    /// The publisher's certificate (DER).
    public let certificate: [UInt8]
    /// The extensions of the root block.
    public let extensions: [GrantExtension]
    /// Root first, then the narrowings.
    public let blocks: [Block]
    /// The last block's private key (32 bytes, Ed25519); nil in a sealed grant (as presented to nodes).
    public let secret: [UInt8]?

    /// The most blocks (root included).
    public static let maximumBlocks = 16
    /// The most scope entries per block.
    public static let maximumScopeEntries = 16
    /// The longest name or path prefix.
    public static let maximumPrefixLength = 255
    /// The most extensions.
    public static let maximumExtensions = 8
    /// The longest extension.
    public static let maximumExtensionLength = 4096
    /// The longest certificate.
    public static let maximumCertificateLength = 8192
    /// The longest encoded grant.
    public static let maximumEncodedLength = 64 * 1024
    /// The text form's prefix.
    public static let textPrefix = "stoqgrant1:"

    static let rootLabel = Array("STOQ access grant v1".utf8) + [0]
    static let blockLabel = Array("STOQ access grant block v1".utf8) + [0]
    static let formatVersion: UInt64 = 1

    /// The grant id in hex (32 characters).
    public var id: String { Hex.encode(grantID) }

    /// The extensions of `type`.
    public func extensions(type: UInt64) -> [GrantExtension] { extensions.filter { $0.type == type } }

    // MARK: creating and narrowing

    /// Issues a new grant signed by a publisher's certificate key.
    /// - Parameters:
    ///   - certificate: the publisher's certificate (DER); its key must be `key`.
    ///   - key: the publisher's private key.
    ///   - grantID: 16 bytes (random by default).
    /// - Throws: ``AccessError`` `.malformed` when a value breaks a bound or the key is not the certificate's.
    public static func issue(
        certificate: [UInt8], key: P256.Signing.PrivateKey, caveats: GrantCaveats, extensions: [GrantExtension] = [],
        grantID: [UInt8] = (0..<16).map { _ in UInt8.random(in: 0 ... .max) }
    ) throws(AccessError) -> AccessGrant {
        guard grantID.count == 16 else { throw AccessError(.malformed, "a grant id is 16 bytes") }
        guard certificate.count <= maximumCertificateLength else { throw AccessError(.malformed, "the publisher's certificate is larger than \(maximumCertificateLength) bytes") }
        guard extensions.count <= maximumExtensions, extensions.allSatisfy({ $0.bytes.count <= maximumExtensionLength }) else {
            throw AccessError(.malformed, "a grant carries at most \(maximumExtensions) extensions of at most \(maximumExtensionLength) bytes")
        }
        try checkBounds(caveats)
        let parsed: Certificate
        do { parsed = try Certificate(derEncoded: certificate) } catch { throw AccessError(.malformed, "the publisher's certificate does not parse") }
        guard let certKey = P256.Signing.PublicKey(parsed.publicKey), certKey.rawRepresentation == key.publicKey.rawRepresentation else {
            throw AccessError(.malformed, "the key is not the key of the certificate; sign with the certificate's own key (--cert/--key)")
        }
        let publisher = NodeID(publicKey: parsed.publicKey)
        let next = Curve25519.Signing.PrivateKey()
        var w = WireWriter()
        w.varint(0)
        w.bytes(grantID)
        w.bytes(publisher.bytes)
        w.lengthPrefixedBytes(certificate)
        caveats.write(&w)
        w.varint(UInt64(extensions.count))
        for e in extensions {
            w.varint(e.type)
            w.lengthPrefixedBytes(e.bytes)
        }
        w.bytes(Array(next.publicKey.rawRepresentation))
        let body = Array(w.buffer.readableBytesView)
        let signature: [UInt8]
        do { signature = Array(try key.signature(for: rootLabel + body).derRepresentation) } catch {
            throw AccessError(.malformed, "cannot sign the grant: \(error)")
        }
        let root = Block(body: body, signature: signature, caveats: caveats, nextKey: Array(next.publicKey.rawRepresentation))
        return AccessGrant(grantID: grantID, publisher: publisher, certificate: certificate, extensions: extensions, blocks: [root],
                           secret: Array(next.rawRepresentation))
    }

    /// The grant narrowed by one more block (offline: needs only ``secret``).
    /// - Throws: ``AccessError`` `.invalidNarrowing` when the grant is sealed, full, or the caveats would widen it.
    public func narrowed(_ caveats: GrantCaveats) throws(AccessError) -> AccessGrant {
        guard let secret, let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: secret) else {
            throw AccessError(.invalidNarrowing, "this grant is sealed (it has no narrowing key); only the copy its issuer handed out can be narrowed")
        }
        guard blocks.count < Self.maximumBlocks else {
            throw AccessError(.invalidNarrowing, "this grant has \(Self.maximumBlocks) blocks already, the most a grant may have")
        }
        try Self.checkBounds(caveats)
        let current = effective
        guard caveats.rights.isSubset(of: current.rights) else {
            throw AccessError(.invalidNarrowing, "a narrowing can only drop rights: the grant has \(current.rights), the narrowing asks for \(caveats.rights)")
        }
        if caveats.notAfter != 0, caveats.notAfter > current.notAfter {
            throw AccessError(.invalidNarrowing, "a narrowing can only bring the expiry earlier")
        }
        if let bound = current.peers.first, let peer = caveats.peer, peer != bound {
            throw AccessError(.invalidNarrowing, "the grant is bound to node \(bound.hex); it cannot be bound to another")
        }
        let next = Curve25519.Signing.PrivateKey()
        var w = WireWriter()
        w.varint(1)
        caveats.write(&w)
        w.bytes(Array(next.publicKey.rawRepresentation))
        let body = Array(w.buffer.readableBytesView)
        let signature: [UInt8]
        do { signature = Array(try key.signature(for: Self.blockLabel + blocks.last!.signature + body)) } catch {
            throw AccessError(.invalidNarrowing, "cannot sign the narrowing: \(error)")
        }
        let block = Block(body: body, signature: signature, caveats: caveats, nextKey: Array(next.publicKey.rawRepresentation))
        return AccessGrant(grantID: grantID, publisher: publisher, certificate: certificate, extensions: extensions, blocks: blocks + [block],
                           secret: Array(next.rawRepresentation))
    }

    /// The same grant without its narrowing key: what a holder presents to a node.
    public var sealed: AccessGrant {
        AccessGrant(grantID: grantID, publisher: publisher, certificate: certificate, extensions: extensions, blocks: blocks, secret: nil)
    }

    static func checkBounds(_ caveats: GrantCaveats) throws(AccessError) {
        guard caveats.scope.count <= maximumScopeEntries else { throw AccessError(.malformed, "a block's scope has at most \(maximumScopeEntries) entries") }
        for entry in caveats.scope {
            switch entry {
            case .content(let id): guard id.count == 32 else { throw AccessError(.malformed, "a content scope is a 32-byte content id") }
            case .namePrefix(let p), .pathPrefix(let p):
                guard !p.isEmpty, p.utf8.count <= maximumPrefixLength else { throw AccessError(.malformed, "a scope prefix is 1 to \(maximumPrefixLength) bytes") }
            }
        }
    }

    // MARK: the effective grant

    /// The intersection of all blocks.
    public struct Effective: Hashable, Sendable {
        /// Rights every block grants.
        public var rights: AccessRights
        /// The earliest not-after (unix seconds).
        public var notAfter: UInt64
        /// Every distinct bound peer (more than one: nobody can use the grant).
        public var peers: [NodeID]
        /// Each block's non-empty scope; a request must be admitted by every one.
        public var scopes: [[ScopeEntry]]

        /// Whether every block's scope admits `item` (nil: a node-wide request, such as STATUS).
        public func admits(_ item: AccessItem?) -> Bool {
            guard let item else { return true }
            return scopes.allSatisfy { scope in scope.contains { $0.admits(item) } }
        }
    }

    /// The intersection of the blocks' caveats.
    public var effective: Effective {
        var result = Effective(rights: blocks[0].caveats.rights, notAfter: blocks[0].caveats.notAfter, peers: [], scopes: [])
        for block in blocks {
            result.rights.formIntersection(block.caveats.rights)
            if block.caveats.notAfter != 0 { result.notAfter = min(result.notAfter, block.caveats.notAfter) }
            if let peer = block.caveats.peer, !result.peers.contains(peer) { result.peers.append(peer) }
            if !block.caveats.scope.isEmpty { result.scopes.append(block.caveats.scope) }
        }
        return result
    }

    // MARK: encoding

    /// The binary form.
    public func encoded() -> [UInt8] {
        var w = WireWriter()
        w.varint(Self.formatVersion)
        w.varint(UInt64(blocks.count))
        for b in blocks {
            w.lengthPrefixedBytes(b.body)
            w.lengthPrefixedBytes(b.signature)
        }
        w.lengthPrefixedBytes(secret ?? [])
        return Array(w.buffer.readableBytesView)
    }

    /// The text form users copy: `stoqgrant1:` + lowercase base32.
    public var text: String { Self.textPrefix + Base32.encode(encoded()) }

    /// Reads the text form (surrounding white space ignored).
    public init(text: String) throws(AccessError) {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard trimmed.hasPrefix(Self.textPrefix) else {
            throw AccessError(.malformed, "a grant starts with \(Self.textPrefix); copy it again in full")
        }
        let body = String(trimmed.dropFirst(Self.textPrefix.count))
        guard body.utf8.count <= (Self.maximumEncodedLength * 8 + 4) / 5, let bytes = Base32.decode(body) else {
            throw AccessError(.malformed, "the grant holds characters outside lowercase base32 (a–z, 2–7), is cut short or too long; copy it again in full")
        }
        try self.init(encoded: bytes)
    }

    /// Reads the binary form, checking every bound (not the signatures: see ``verify(trust:now:revoked:)``).
    public init(encoded bytes: [UInt8]) throws(AccessError) {
        guard bytes.count <= Self.maximumEncodedLength else { throw AccessError(.malformed, "a grant is at most \(Self.maximumEncodedLength) bytes") }
        do {
            var r = WireReader(ByteBuffer(bytes: bytes), context: "grant")
            let version = try r.varint("version")
            guard version == Self.formatVersion else { throw WireError(.malformed, "grant format \(version) is not known to this stoq (it reads format 1)") }
            let count = try r.varint("blocks", max: UInt64(Self.maximumBlocks))
            guard count >= 1 else { throw WireError(.malformed, "a grant has at least its root block") }
            var raw: [([UInt8], [UInt8])] = []
            for _ in 0..<count {
                raw.append((try r.lengthPrefixedBytes("body", max: Self.maximumEncodedLength), try r.lengthPrefixedBytes("signature", max: 160)))
            }
            let secret = try r.lengthPrefixedBytes("secret", max: 32)
            guard secret.isEmpty || secret.count == 32 else { throw WireError(.malformed, "a narrowing key is 32 bytes") }
            try r.finish()

            var blocks: [Block] = []
            var grantID: [UInt8] = [], publisher: NodeID?, certificate: [UInt8] = [], extensions: [GrantExtension] = []
            for (index, (body, signature)) in raw.enumerated() {
                var b = WireReader(ByteBuffer(bytes: body), context: "grant block \(index)")
                let kind = try b.varint("kind", max: 1)
                guard kind == (index == 0 ? 0 : 1) else { throw WireError(.malformed, "block \(index) is of the wrong kind") }
                if index == 0 {
                    grantID = try b.bytes("grantID", count: 16)
                    publisher = try? NodeID(bytes: try b.bytes("publisher", count: 32))
                    certificate = try b.lengthPrefixedBytes("certificate", max: Self.maximumCertificateLength)
                    guard !certificate.isEmpty else { throw WireError(.malformed, "the root block carries the publisher's certificate") }
                }
                let caveats = try GrantCaveats.read(&b)
                if index == 0 {
                    let n = try b.varint("extensions", max: UInt64(Self.maximumExtensions))
                    for _ in 0..<n {
                        let type = try b.varint("extensionType")
                        extensions.append(GrantExtension(type: type, bytes: try b.lengthPrefixedBytes("extension", max: Self.maximumExtensionLength)))
                    }
                }
                let next = try b.bytes("nextKey", count: 32)
                try b.finish()
                guard index == 0 ? !signature.isEmpty : signature.count == 64 else { throw WireError(.malformed, "block \(index) has a signature of the wrong size") }
                blocks.append(Block(body: body, signature: signature, caveats: caveats, nextKey: next))
            }
            self.init(grantID: grantID, publisher: publisher!, certificate: certificate, extensions: extensions, blocks: blocks, secret: secret.isEmpty ? nil : secret)
        } catch let error as WireError {
            throw AccessError(.malformed, "not a valid grant: \(error.reason)")
        } catch {
            throw AccessError(.malformed, "not a valid grant")
        }
    }

    init(grantID: [UInt8], publisher: NodeID, certificate: [UInt8], extensions: [GrantExtension], blocks: [Block], secret: [UInt8]?) {
        self.grantID = grantID
        self.publisher = publisher
        self.certificate = certificate
        self.extensions = extensions
        self.blocks = blocks
        self.secret = secret
    }

    // MARK: verification

    /// Checks the grant's signatures without the certificate chain (sans-IO): the certificate's key
    /// is the publisher id's, the root is signed by it, every narrowing by the previous block's key,
    /// and the secret (when carried) is the last block's.
    /// - Throws: ``AccessError`` `.badSignature`.
    public func verifySignatures() throws(AccessError) {
        let parsed: Certificate
        do { parsed = try Certificate(derEncoded: certificate) } catch { throw AccessError(.badSignature, "the grant's certificate does not parse") }
        guard NodeID(publicKey: parsed.publicKey) == publisher else {
            throw AccessError(.badSignature, "the grant's certificate is not the publisher's (its key hashes to another node id)")
        }
        guard let key = P256.Signing.PublicKey(parsed.publicKey),
              let signature = try? P256.Signing.ECDSASignature(derRepresentation: blocks[0].signature),
              key.isValidSignature(signature, for: Self.rootLabel + blocks[0].body)
        else { throw AccessError(.badSignature, "the grant's root signature does not verify against its publisher's certificate (altered or forged)") }
        for index in blocks.indices.dropFirst() {
            guard let previous = try? Curve25519.Signing.PublicKey(rawRepresentation: blocks[index - 1].nextKey),
                  previous.isValidSignature(blocks[index].signature, for: Self.blockLabel + blocks[index - 1].signature + blocks[index].body)
            else { throw AccessError(.badSignature, "block \(index) of the grant does not verify (altered, or not signed by the previous block's key)") }
        }
        if let secret {
            guard let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: secret),
                  Array(key.publicKey.rawRepresentation) == blocks.last!.nextKey
            else { throw AccessError(.badSignature, "the grant's narrowing key is not its last block's") }
        }
    }

    /// Verifies the grant fully: the certificate chains to `trust` (checked at `now`, or at the end
    /// of its validity if it has expired since: the node id names the key, which renewal keeps),
    /// every signature, not expired at `now`, and not in `revoked`.
    /// - Returns: the effective grant.
    public func verify(trust: TrustRoots, now: Date, revoked: Set<[UInt8]> = []) async throws(AccessError) -> Effective {
        try verifySignatures()
        let parsed: Certificate
        do { parsed = try Certificate(derEncoded: certificate) } catch { throw AccessError(.badSignature, "the grant's certificate does not parse") }
        let at = min(now, parsed.notValidAfter.addingTimeInterval(-1))
        do { _ = try await trust.verify(chainDER: [certificate], at: at) } catch {
            throw AccessError(.badSignature, "the grant's publisher certificate is not from this network's CA: \(error.reason)")
        }
        let effective = self.effective
        guard UInt64(max(0, now.timeIntervalSince1970)) <= effective.notAfter else {
            throw AccessError(.expired, "grant \(id) expired at \(Self.format(effective.notAfter)); ask its publisher for a new one")
        }
        guard !revoked.contains(grantID) else {
            throw AccessError(.revoked, "grant \(id) was revoked by its publisher")
        }
        guard effective.peers.count <= 1 else {
            throw AccessError(.wrongPeer, "grant \(id) is bound to two different peers, so nobody can use it")
        }
        return effective
    }

    /// An ISO 8601 time of unix seconds.
    public static func format(_ seconds: UInt64) -> String {
        let f = ISO8601DateFormatter()
        return f.string(from: Date(timeIntervalSince1970: TimeInterval(min(seconds, 253_402_300_799))))
    }

    /// Fuzz entry point: decodes arbitrary bytes (binary and text forms) and traps only if a decoded
    /// grant does not survive a round trip.
    public static func fuzz(_ bytes: [UInt8]) {
        if let grant = try? AccessGrant(encoded: bytes) {
            precondition((try? AccessGrant(encoded: grant.encoded())) == grant, "grant round trip changed")
            _ = try? grant.verifySignatures()
            _ = grant.effective
        }
        if let text = String(bytes: bytes, encoding: .utf8), let grant = try? AccessGrant(text: text) {
            precondition((try? AccessGrant(text: grant.text)) == grant, "grant text round trip changed")
        }
        if let list = try? RevocationList(encoded: bytes) {
            precondition((try? RevocationList(encoded: list.encoded())) == list, "revocation list round trip changed")
            _ = try? list.verifySignature()
        }
    }
}
