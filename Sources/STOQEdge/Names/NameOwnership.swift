import Crypto
import Foundation
import Synchronization

/// A signed statement of who owns a name, kept in the network's CT-style log (docs/PROTOCOL.md
/// "Owned names"). Both name systems honour it: names published on an origin (`NAME_PUBLISH`) and
/// DHT names (`stoq name set`).
///
/// - A **claim** (kind 1) is signed by the key it binds the name to. The first logged claim for a
///   name (lowest log index) wins; later claims by other keys are ignored.
/// - A **transfer** (kind 2) hands the name to a new key and is signed by the current owner.
/// - A **recovery** (kind 3) hands the name to a new key after the owner lost theirs; it is signed
///   by the log's own key (the log operator, who appends entries), so only the operator can recover.
///
/// Encoding (integers big-endian):
/// ```
/// "SNB" 0x01 | kind u8 | name: u8 length (1…255) + UTF-8 | owner key 65 (X9.63, the new owner) |
/// signer key 65 (X9.63) | issuedAt u64 (ms) | signature 64 (raw r‖s over everything before it)
/// ```
public struct NameOwnerBinding: Sendable, Equatable {
    /// What the entry does.
    public enum Kind: UInt8, Sendable {
        /// The first owner of a name.
        case claim = 1
        /// The owner hands the name to another key.
        case transfer = 2
        /// The log operator hands the name to another key (the owner lost theirs).
        case recovery = 3
    }
    /// What the entry does.
    public let kind: Kind
    /// The name (1…255 bytes of UTF-8, no control characters).
    public let name: String
    /// The key the name belongs to from this entry on (X9.63, 65 bytes).
    public let owner: [UInt8]
    /// The key that signed: the owner (claim), the previous owner (transfer), the log key (recovery).
    public let signer: [UInt8]
    /// When it was signed (ms since 1970).
    public let issuedAt: UInt64
    /// Raw (r‖s) P-256 signature over ``signedBytes``.
    public let signature: [UInt8]

    /// The four bytes every binding starts with ("SNB", format 1).
    public static let prefix: [UInt8] = [0x53, 0x4E, 0x42, 0x01]
    /// The longest encoding: prefix, kind, name, two keys, time, signature.
    public static let maximumEncodedLength = 4 + 1 + 1 + 255 + 65 + 65 + 8 + 64

    /// A claim: `owner` takes `name`.
    public static func claim(_ name: String, owner: P256.Signing.PrivateKey, now: UInt64) throws(NameRecordError) -> NameOwnerBinding {
        try sign(.claim, name: name, owner: Array(owner.publicKey.x963Representation), signer: owner, now: now)
    }

    /// A transfer: the current owner `from` hands `name` to `to` (X9.63).
    public static func transfer(_ name: String, from: P256.Signing.PrivateKey, to: [UInt8], now: UInt64) throws(NameRecordError) -> NameOwnerBinding {
        try sign(.transfer, name: name, owner: to, signer: from, now: now)
    }

    /// A recovery: the log operator (`logKey`) hands `name` to `to` (X9.63).
    public static func recovery(_ name: String, logKey: P256.Signing.PrivateKey, to: [UInt8], now: UInt64) throws(NameRecordError) -> NameOwnerBinding {
        try sign(.recovery, name: name, owner: to, signer: logKey, now: now)
    }

    private static func sign(_ kind: Kind, name: String, owner: [UInt8], signer: P256.Signing.PrivateKey, now: UInt64) throws(NameRecordError) -> NameOwnerBinding {
        try NameRecord.validate(name: name)
        guard (try? P256.Signing.PublicKey(x963Representation: owner)) != nil else {
            throw NameRecordError(.malformed, "the new owner key is not a P-256 public key")
        }
        let signerKey = Array(signer.publicKey.x963Representation)
        let body = body(kind, name, owner, signerKey, now)
        guard let signature = try? signer.signature(for: body) else { throw NameRecordError(.badSignature, "could not sign the binding of '\(name)'") }
        return NameOwnerBinding(kind: kind, name: name, owner: owner, signer: signerKey, issuedAt: now, signature: Array(signature.rawRepresentation))
    }

    private init(kind: Kind, name: String, owner: [UInt8], signer: [UInt8], issuedAt: UInt64, signature: [UInt8]) {
        self.kind = kind; self.name = name; self.owner = owner; self.signer = signer; self.issuedAt = issuedAt; self.signature = signature
    }

    private static func body(_ kind: Kind, _ name: String, _ owner: [UInt8], _ signer: [UInt8], _ issuedAt: UInt64) -> [UInt8] {
        var out = prefix
        out.append(kind.rawValue)
        let bytes = Array(name.utf8)
        out.append(UInt8(bytes.count)); out += bytes
        out += owner; out += signer
        for shift in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: issuedAt >> UInt64(shift))) }
        return out
    }

    /// The bytes the signer signs.
    public var signedBytes: [UInt8] { Self.body(kind, name, owner, signer, issuedAt) }

    /// The canonical encoding (what goes into the log).
    public func encode() -> [UInt8] { signedBytes + signature }

    /// True when `bytes` start like a binding (so a log holding certificates and bindings can be
    /// told apart: a certificate's DER starts with 0x30).
    public static func looksLikeOne(_ bytes: [UInt8]) -> Bool { bytes.starts(with: prefix) }

    /// Decodes a binding (structure only: call ``hasValidSignature``). Safe on any bytes.
    public static func decode(_ bytes: [UInt8]) throws(NameRecordError) -> NameOwnerBinding {
        guard bytes.count <= maximumEncodedLength else { throw NameRecordError(.malformed, "a name binding is at most \(maximumEncodedLength) bytes; got \(bytes.count)") }
        guard looksLikeOne(bytes), bytes.count > 6 else { throw NameRecordError(.malformed, "not a STOQ name binding (bad magic)") }
        guard let kind = Kind(rawValue: bytes[4]) else { throw NameRecordError(.malformed, "unknown name binding kind \(bytes[4])") }
        let length = Int(bytes[5])
        guard length >= 1, bytes.count == 6 + length + 65 + 65 + 8 + 64 else {
            throw NameRecordError(.malformed, "a name binding for a \(length)-byte name must be \(6 + length + 202) bytes; got \(bytes.count)")
        }
        var at = 6
        guard let name = String(validating: bytes[at..<at + length], as: UTF8.self) else { throw NameRecordError(.invalidName, "the bound name is not UTF-8") }
        try NameRecord.validate(name: name)
        at += length
        let owner = Array(bytes[at..<at + 65]); at += 65
        let signer = Array(bytes[at..<at + 65]); at += 65
        var issuedAt: UInt64 = 0
        for byte in bytes[at..<at + 8] { issuedAt = issuedAt << 8 | UInt64(byte) }
        at += 8
        return NameOwnerBinding(kind: kind, name: name, owner: owner, signer: signer, issuedAt: issuedAt, signature: Array(bytes[at...]))
    }

    /// Whether the signature verifies under ``signer`` (and, for a claim, the signer is the owner).
    public var hasValidSignature: Bool {
        guard let key = try? P256.Signing.PublicKey(x963Representation: signer),
              (try? P256.Signing.PublicKey(x963Representation: owner)) != nil,
              let sig = try? P256.Signing.ECDSASignature(rawRepresentation: signature) else { return false }
        if kind == .claim && owner != signer { return false }
        return key.isValidSignature(sig, for: signedBytes)
    }

    /// Fuzz entry point: decodes arbitrary bytes; a decoded binding must re-encode identically.
    public static func fuzz(_ bytes: [UInt8]) {
        if let b = try? decode(bytes) {
            precondition(b.encode() == bytes, "name binding encoding is not canonical")
            _ = b.hasValidSignature
        }
    }
}

/// Who owns which name on one node, and the rule (sans-IO: pass the time).
///
/// - A name bound in the log (``apply(_:index:logKey:)``, entries in log order) belongs to the key
///   of its first logged claim, or of the last valid transfer or recovery after it. The log's order
///   is what "first" means when two keys race: whoever's claim got the lower index owns the name.
/// - A name not (yet) in the log belongs to the first key this node saw publish it (``admit``).
///   A claim logged later for another key overrides that local first sight, so every node that
///   reads the log converges on the same owner.
/// - A record signed by any other key is refused with ``NameRecordError`` `.wrongOwner`. Bindings do
///   not expire with the records: a name stays its owner's after its record's TTL runs out.
public struct NameOwnership: Sendable, Codable, Equatable {
    /// One name's owner.
    public struct Owner: Sendable, Codable, Equatable {
        /// The owner's key (X9.63).
        public var key: [UInt8]
        /// When this node bound it (ms since 1970).
        public var since: UInt64
        /// The log index of the entry that bound it (nil: first seen here, not logged).
        public var logIndex: UInt64?
    }
    /// Owners by name.
    public private(set) var owners: [String: Owner] = [:]
    /// The log entries read so far (the next index to read).
    public private(set) var logCursor: UInt64 = 0
    /// The most names kept; further first sights are refused (`.tableFull`).
    public static let maximumNames = 1_000_000

    /// Empty.
    public init() {}

    /// The owner of `name`, if bound.
    public func owner(of name: String) -> Owner? { owners[name] }

    /// Refuses `key` for `name` when the name belongs to another key.
    public func check(_ name: String, key: [UInt8]) throws(NameRecordError) {
        guard let held = owners[name], held.key != key else { return }
        let origin = held.logIndex.map { "bound in the CT log at entry \($0)" } ?? "first published here"
        throw NameRecordError(.wrongOwner, "'\(name)' is owned by another key (owner \(Self.fingerprint(held.key)), \(origin)); only its owner can publish it. The owner can hand it over with `stoq name transfer`")
    }

    /// Checks `key` for `name` and binds the name to it when unbound.
    /// - Returns: true when this bound the name (first sight).
    @discardableResult
    public mutating func admit(_ name: String, key: [UInt8], now: UInt64) throws(NameRecordError) -> Bool {
        try check(name, key: key)
        guard owners[name] == nil else { return false }
        guard owners.count < Self.maximumNames else { throw NameRecordError(.tableFull, "this node holds \(Self.maximumNames) owned names; it takes no new ones") }
        owners[name] = Owner(key: key, since: now, logIndex: nil)
        return true
    }

    /// Applies one log entry (call in log order, each index once).
    /// - Parameters:
    ///   - logKey: the log's public key (X9.63): the only signer of a recovery.
    /// - Returns: true when the owner of the entry's name changed.
    @discardableResult
    public mutating func apply(_ binding: NameOwnerBinding, index: UInt64, logKey: [UInt8]?, now: UInt64) -> Bool {
        logCursor = max(logCursor, index + 1)
        guard binding.hasValidSignature else { return false }
        let held = owners[binding.name]
        switch binding.kind {
        case .claim:
            // The first logged claim wins; a local first sight gives way to it.
            if let held, held.logIndex != nil { return false }
            if held == nil, owners.count >= Self.maximumNames { return false }
        case .transfer:
            guard let held, held.key == binding.signer else { return false }
        case .recovery:
            guard let logKey, binding.signer == logKey else { return false }
        }
        owners[binding.name] = Owner(key: binding.owner, since: now, logIndex: index)
        return held?.key != binding.owner || held?.logIndex == nil
    }

    /// Marks log entries up to `index` read (entries that are not bindings).
    public mutating func skip(through index: UInt64) { logCursor = max(logCursor, index + 1) }

    /// A short, stable text for a key: the first 8 bytes of SHA-256 of its X9.63 form, in hex.
    public static func fingerprint(_ key: [UInt8]) -> String {
        SHA256.hash(data: key).prefix(8).map { String(format: "%02x", $0) }.joined()
    }
}

/// A ``NameOwnership`` shared by a node's tasks, kept in a JSON file (written whole to a temporary
/// file and renamed over the old one, so a crash leaves the old or the new file), and optionally
/// fed by the CT log (``attachLog(reader:logKey:)``).
public final class NameOwnershipStore: Sendable {
    /// Reads log entries that start with ``NameOwnerBinding/prefix`` from index `from` on: (index, bytes).
    public typealias LogReader = @Sendable (_ from: UInt64) -> [(UInt64, [UInt8])]

    private struct State: Sendable {
        var ownership = NameOwnership()
        var reader: LogReader?
        var logKey: [UInt8]?
    }
    private let state: Mutex<State>
    /// The file (nil: memory only).
    public let path: String?

    /// Opens (or starts) the store kept at `path`.
    public init(path: String?) {
        self.path = path
        var initial = State()
        if let path, let data = FileManager.default.contents(atPath: path),
           let saved = try? JSONDecoder().decode(NameOwnership.self, from: data) {
            initial.ownership = saved
        }
        state = Mutex(initial)
    }

    /// Reads bindings from the CT log (`reader`) before every decision; `logKey` (X9.63) signs recoveries.
    public func attachLog(reader: @escaping LogReader, logKey: [UInt8]) {
        state.withLock { $0.reader = reader; $0.logKey = logKey }
    }

    /// The owner of `name` now (after reading the log).
    public func owner(of name: String, now: UInt64) -> NameOwnership.Owner? {
        refresh(now: now)
        return state.withLock { $0.ownership.owner(of: name) }
    }

    /// Refuses `key` for `name` when another key owns it (reads the log first).
    public func check(_ name: String, key: [UInt8], now: UInt64) throws(NameRecordError) {
        refresh(now: now)
        let ownership = state.withLock { $0.ownership }
        try ownership.check(name, key: key)
    }

    /// Checks `key` for `name` and binds the name to it when unbound (saved at once).
    public func admit(_ name: String, key: [UInt8], now: UInt64) throws(NameRecordError) {
        refresh(now: now)
        var failure: NameRecordError?
        let bound = state.withLock { s -> Bool in
            do { return try s.ownership.admit(name, key: key, now: now) } catch let e as NameRecordError { failure = e; return false } catch { return false }
        }
        if let failure { throw failure }
        if bound { save() }
    }

    /// Binds `name` to `key` when unbound, without refusing (records loaded from disk).
    public func adopt(_ name: String, key: [UInt8], now: UInt64) {
        let bound = state.withLock { (try? $0.ownership.admit(name, key: key, now: now)) ?? false }
        if bound { save() }
    }

    /// How many names are bound.
    public var count: Int { state.withLock { $0.ownership.owners.count } }

    /// Reads new log entries, if a log is attached.
    public func refresh(now: UInt64) {
        let changed: Bool = state.withLock { s in
            guard let reader = s.reader else { return false }
            let entries = reader(s.ownership.logCursor)
            guard !entries.isEmpty else { return false }
            for (index, bytes) in entries.sorted(by: { $0.0 < $1.0 }) where index >= s.ownership.logCursor {
                if let binding = try? NameOwnerBinding.decode(bytes) {
                    s.ownership.apply(binding, index: index, logKey: s.logKey, now: now)
                } else {
                    s.ownership.skip(through: index)
                }
            }
            return true  // the cursor moved: keep it
        }
        if changed { save() }
    }

    private func save() {
        guard let path else { return }
        let data: Data? = state.withLock { try? JSONEncoder().encode($0.ownership) }
        guard let data else { return }
        let directory = (path as NSString).deletingLastPathComponent
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let temporary = path + ".tmp"
        if FileManager.default.createFile(atPath: temporary, contents: data) {
            _ = rename(temporary, path)
        }
    }
}
