import Crypto
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Everything a reader needs to fetch one content, in one string: `stoq1` + lowercase base32.
///
/// A ticket carries the content id, the content's own read key (it opens this content and
/// nothing else; never the publisher's secret), the SHA-256 of the network CA's
/// SubjectPublicKeyInfo (the reader pins the nodes it dials to that CA, without holding a
/// certificate of its own), the node ids and addresses of up to ``maximumProviders`` providers,
/// and optionally a Nexus DHT bootstrap address. `stoq share` prints one; `stoq get TICKET -o OUT`
/// needs nothing else. The binary layout (version 1) is in docs/PROTOCOL.md, "Tickets":
///
/// ```
/// version u8 = 1 | content [32] | key [32] | ca [32] | flags u8 (bit 0: bootstrap)
/// | count u8 (0...8) | count × (node id [32] | IPv6 [16] | port u16) | [bootstrap IPv6 [16] | port u16]
/// | checksum [4] = SHA-256(everything before)[0..<4]
/// ```
///
/// Decoding is strict: exact length, known version and flags, bounded count, no zero port, no
/// unspecified or multicast address, no repeated provider, a matching checksum.
public struct ShareTicket: Sendable, Hashable {
    /// A node that serves the content: its id (SHA-256 of its certificate's SPKI) and address.
    public struct Provider: Sendable, Hashable {
        /// The node id (32 bytes).
        public var nodeID: [UInt8]
        /// Where it listens.
        public var address: Address
        /// Creates a provider.
        public init(nodeID: [UInt8], address: Address) {
            self.nodeID = nodeID
            self.address = address
        }
    }

    /// An IPv6 address and UDP port.
    public struct Address: Sendable, Hashable, CustomStringConvertible {
        /// The 16 address bytes, network order.
        public var ip: [UInt8]
        /// The port (never 0 in a valid ticket).
        public var port: UInt16
        /// Wraps 16 address bytes and a port.
        public init(ip: [UInt8], port: UInt16) {
            self.ip = ip
            self.port = port
        }
        /// Parses the text form of an IPv6 address (no brackets) and a port; nil if it is not IPv6.
        public init?(host: String, port: UInt16) {
            var raw = in6_addr()
            let trimmed = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
            guard inet_pton(AF_INET6, trimmed, &raw) == 1 else { return nil }
            self.ip = withUnsafeBytes(of: &raw) { Array($0) }
            self.port = port
        }
        /// The address in text form, without brackets (`::1`).
        public var host: String {
            var raw = in6_addr()
            withUnsafeMutableBytes(of: &raw) { $0.copyBytes(from: ip.prefix(16)) }
            var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
            guard inet_ntop(AF_INET6, &raw, &buffer, socklen_t(buffer.count)) != nil else { return "::" }
            return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        /// `[host]:port`.
        public var description: String { "[\(host)]:\(port)" }
    }

    /// The text prefix of every ticket.
    public static let prefix = "stoq1"
    /// The binary format version this build writes for a ticket carrying a read key (version 2
    /// carries a key wrapped for one reader instead; both are read).
    public static let version: UInt8 = 1
    /// The version of a ticket whose content key is wrapped for one reader (``wrappedKey``).
    public static let wrappedVersion: UInt8 = 2
    /// The most providers a ticket holds.
    public static let maximumProviders = 8
    /// The longest ticket text accepted (a full ticket is 839 characters).
    public static let maximumTextLength = 1024
    static let checksumLength = 4
    static let providerLength = 32 + 16 + 2
    static let fixedLength = 1 + 32 + 32 + 32 + 1 + 1

    /// The content's root id.
    public var content: ContentID
    /// The content's read key (32 bytes): it opens this content's key tables and nothing else.
    /// Empty in a version 2 ticket, whose key is in ``wrappedKey``.
    public var readKey: [UInt8]
    /// Version 2: the content key wrapped for one reader's X25519 key (only that reader opens it).
    public var wrappedKey: ReaderKeyEnvelope?
    /// SHA-256 of the network CA certificate's DER SubjectPublicKeyInfo (32 bytes).
    public var caFingerprint: [UInt8]
    /// Nodes that serve the content (at most ``maximumProviders``).
    public var providers: [Provider]
    /// A Nexus DHT node to find more providers through, if any.
    public var bootstrap: Address?

    /// Creates a ticket. ``encoded()`` and ``text`` check it against the format's bounds.
    public init(content: ContentID, readKey: [UInt8], caFingerprint: [UInt8], providers: [Provider], bootstrap: Address? = nil) {
        self.content = content
        self.readKey = readKey
        self.caFingerprint = caFingerprint
        self.providers = providers
        self.bootstrap = bootstrap
        self.wrappedKey = nil
    }

    /// Creates a version 2 ticket: the content key travels wrapped for one reader.
    public init(content: ContentID, wrappedKey: ReaderKeyEnvelope, caFingerprint: [UInt8], providers: [Provider], bootstrap: Address? = nil) {
        self.init(content: content, readKey: [], caFingerprint: caFingerprint, providers: providers, bootstrap: bootstrap)
        self.wrappedKey = wrappedKey
    }

    /// The bytes of the key field: the read key (version 1) or the wrapped key (version 2).
    var keyField: [UInt8] { wrappedKey?.encode() ?? readKey }

    /// Whether `text` looks like a ticket (starts with `stoq1`), as opposed to a content id or name.
    public static func looksLikeTicket(_ text: String) -> Bool {
        text.trimmingWhitespace.hasPrefix(prefix)
    }

    /// The binary form.
    /// - Throws: ``ContentError`` `.invalidArgument` when a field is out of the format's bounds.
    public func encoded() throws(ContentError) -> [UInt8] {
        try Self.check(readKey: readKey, wrappedKey: wrappedKey, content: content, caFingerprint: caFingerprint, providers: providers, bootstrap: bootstrap)
        var out: [UInt8] = [wrappedKey == nil ? Self.version : Self.wrappedVersion]
        out += content.manifest.bytes
        out += keyField
        out += caFingerprint
        out.append(bootstrap == nil ? 0 : 1)
        out.append(UInt8(providers.count))
        for p in providers {
            out += p.nodeID
            Self.append(p.address, to: &out)
        }
        if let bootstrap { Self.append(bootstrap, to: &out) }
        out += Array(SHA256.hash(data: out)).prefix(Self.checksumLength)
        return out
    }

    /// The text form: `stoq1` + lowercase base32 of ``encoded()``.
    public func text() throws(ContentError) -> String {
        Self.prefix + Base32.encode(try encoded())
    }

    /// Parses the text form (surrounding whitespace is ignored).
    /// - Throws: ``ContentError`` with a reason for people when the text is not a valid ticket.
    public init(text: String) throws(ContentError) {
        guard text.utf8.count <= Self.maximumTextLength else {
            throw ContentError(.tooLarge, "the ticket is \(text.utf8.count) characters long, more than any ticket (\(Self.maximumTextLength)); copy only the stoq1… string")
        }
        let t = text.trimmingWhitespace
        guard t.hasPrefix(Self.prefix) else {
            throw ContentError(.malformed, "not a ticket: a ticket starts with \(Self.prefix) (stoq share prints one)")
        }
        let body = t.dropFirst(Self.prefix.count)
        guard body.utf8.allSatisfy({ (97...122).contains($0) || (50...55).contains($0) }), let bytes = Base32.decode(String(body)) else {
            throw ContentError(.malformed, "the ticket holds characters outside lowercase base32 (a–z, 2–7) or is cut short; copy it again in full")
        }
        try self.init(bytes: bytes)
    }

    /// Parses the binary form.
    /// - Throws: ``ContentError`` with a reason for people when the bytes are not a valid ticket.
    public init(bytes: [UInt8]) throws(ContentError) {
        guard bytes.count >= Self.fixedLength + Self.checksumLength else {
            throw ContentError(.malformed, "the ticket is cut short (\(bytes.count) bytes); copy it again in full")
        }
        guard bytes[0] == Self.version || bytes[0] == Self.wrappedVersion else {
            throw ContentError(.unsupportedVersion, "the ticket is version \(bytes[0]); this stoq reads version \(Self.version) and \(Self.wrappedVersion) tickets (update stoq)")
        }
        // Version 2 carries a 145-byte wrapped key where version 1 has the 32-byte read key.
        let shift = bytes[0] == Self.wrappedVersion ? ReaderKeyEnvelope.length - 32 : 0
        guard bytes.count >= Self.fixedLength + shift + Self.checksumLength else {
            throw ContentError(.malformed, "the ticket is cut short (\(bytes.count) bytes); copy it again in full")
        }
        let body = bytes.dropLast(Self.checksumLength)
        guard Array(SHA256.hash(data: Array(body)).prefix(Self.checksumLength)) == Array(bytes.suffix(Self.checksumLength)) else {
            throw ContentError(.malformed, "the ticket is damaged (its checksum does not match); copy it again in full")
        }
        let flags = bytes[97 + shift]
        guard flags & ~1 == 0 else {
            throw ContentError(.malformed, "the ticket sets unknown flags (0x\(String(flags, radix: 16))); it was written by a newer stoq")
        }
        let count = Int(bytes[98 + shift])
        guard count <= Self.maximumProviders else {
            throw ContentError(.malformed, "the ticket lists \(count) providers, more than \(Self.maximumProviders)")
        }
        let expected = Self.fixedLength + shift + count * Self.providerLength + (flags & 1 == 1 ? 18 : 0) + Self.checksumLength
        guard bytes.count == expected else {
            throw ContentError(.malformed, "the ticket is \(bytes.count) bytes where its \(count) providers\(flags & 1 == 1 ? " and bootstrap" : "") need \(expected); copy it again in full")
        }
        self.content = ContentID(ChunkID(bytes: Array(bytes[1..<33]))!)
        if shift > 0 {
            let envelope = try ReaderKeyEnvelope.decodeTyped(Array(bytes[33..<(33 + ReaderKeyEnvelope.length)]))
            self.readKey = []
            self.wrappedKey = envelope
        } else {
            self.readKey = Array(bytes[33..<65])
            self.wrappedKey = nil
        }
        self.caFingerprint = Array(bytes[(65 + shift)..<(97 + shift)])
        var at = Self.fixedLength + shift
        var providers: [Provider] = []
        for _ in 0..<count {
            let id = Array(bytes[at..<at + 32])
            providers.append(Provider(nodeID: id, address: Self.address(bytes, at: at + 32)))
            at += Self.providerLength
        }
        self.providers = providers
        self.bootstrap = flags & 1 == 1 ? Self.address(bytes, at: at) : nil
        try Self.check(readKey: readKey, wrappedKey: wrappedKey, content: content, caFingerprint: caFingerprint, providers: providers, bootstrap: bootstrap)
    }

    private static func address(_ bytes: [UInt8], at i: Int) -> Address {
        Address(ip: Array(bytes[i..<i + 16]), port: UInt16(bytes[i + 16]) << 8 | UInt16(bytes[i + 17]))
    }

    private static func append(_ a: Address, to out: inout [UInt8]) {
        out += a.ip
        out.append(UInt8(a.port >> 8))
        out.append(UInt8(a.port & 0xFF))
    }

    private static func check(
        readKey: [UInt8], wrappedKey: ReaderKeyEnvelope?, content: ContentID, caFingerprint: [UInt8], providers: [Provider], bootstrap: Address?
    ) throws(ContentError) {
        if let wrappedKey {
            guard readKey.isEmpty else { throw ContentError(.invalidArgument, "a ticket carries a read key or a wrapped key, not both") }
            guard wrappedKey.content == content else {
                throw ContentError(.malformed, "the ticket's wrapped key is for another content (\(wrappedKey.content)), not \(content); the ticket was altered")
            }
            guard wrappedKey.reader.count == 32, wrappedKey.encapsulatedKey.count == 32, wrappedKey.sealedKey.count == 48 else {
                throw ContentError(.invalidArgument, "a ticket's wrapped key has fields of the wrong size")
            }
        } else {
            guard readKey.count == 32 else { throw ContentError(.invalidArgument, "a ticket's read key is 32 bytes, not \(readKey.count)") }
        }
        guard caFingerprint.count == 32 else { throw ContentError(.invalidArgument, "a ticket's CA fingerprint is 32 bytes, not \(caFingerprint.count)") }
        guard providers.count <= maximumProviders else {
            throw ContentError(.invalidArgument, "a ticket holds at most \(maximumProviders) providers, not \(providers.count)")
        }
        guard !providers.isEmpty || bootstrap != nil else {
            throw ContentError(.invalidArgument, "the ticket names no provider and no DHT bootstrap: a reader would have nowhere to fetch from")
        }
        var seen = Set<Address>()
        for p in providers {
            guard p.nodeID.count == 32 else { throw ContentError(.invalidArgument, "a provider's node id is 32 bytes, not \(p.nodeID.count)") }
            try checkAddress(p.address, what: "provider")
            guard seen.insert(p.address).inserted else {
                throw ContentError(.invalidArgument, "the ticket lists the provider \(p.address) twice")
            }
        }
        if let bootstrap { try checkAddress(bootstrap, what: "DHT bootstrap") }
    }

    private static func checkAddress(_ a: Address, what: String) throws(ContentError) {
        guard a.ip.count == 16 else { throw ContentError(.invalidArgument, "a \(what) address is 16 bytes (IPv6), not \(a.ip.count)") }
        guard a.port != 0 else { throw ContentError(.invalidArgument, "the ticket's \(what) \(a) has port 0") }
        guard a.ip.contains(where: { $0 != 0 }) else { throw ContentError(.invalidArgument, "the ticket's \(what) has the unspecified address [::]") }
        guard a.ip[0] != 0xFF else { throw ContentError(.invalidArgument, "the ticket's \(what) \(a) is a multicast address") }
    }

    /// Fuzz entry point: decodes arbitrary bytes and text; a decoded ticket must re-encode to the same bytes.
    public static func fuzz(_ data: [UInt8]) {
        if let t = try? ShareTicket(bytes: data) {
            precondition((try? t.encoded()) == data, "a decoded ticket re-encodes differently")
        }
        if let t = try? ShareTicket(text: String(decoding: data, as: UTF8.self)) {
            precondition((try? ShareTicket(text: t.text())) == t, "a decoded ticket text does not round-trip")
        }
    }
}
