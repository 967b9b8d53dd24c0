import Foundation
import STOQContent
import STOQExchange
import STOQPeering
import STOQIdentity

/// A value of a node configuration key, after its type was checked.
public enum ConfigValue: Sendable, Hashable {
    /// A string (also paths, addresses, the location).
    case string(String)
    /// An integer.
    case integer(Int)
    /// `true` or `false`.
    case bool(Bool)
    /// A list of strings (roles, addresses, node ids).
    case list([String])

    /// The JSON text of the value.
    var json: String {
        switch self {
        case .string(let s): return ConfigValue.quote(s)
        case .integer(let i): return String(i)
        case .bool(let b): return b ? "true" : "false"
        case .list(let l): return "[" + l.map(ConfigValue.quote).joined(separator: ", ") + "]"
        }
    }

    static func quote(_ s: String) -> String {
        String(decoding: (try? JSONEncoder().encode(s)) ?? Data("\"\"".utf8), as: UTF8.self)
            .replacingOccurrences(of: "\\/", with: "/")
    }

    var string: String? { if case .string(let s) = self { return s } else { return nil } }
    var integer: Int? { if case .integer(let i) = self { return i } else { return nil } }
    var bool: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    var list: [String]? { if case .list(let l) = self { return l } else { return nil } }
}

/// A configuration file (or flag) refused: an unknown key, a wrong type, a bad value, unreadable
/// JSON. `reason` is one line for people, `config FILE: …; what to do`.
public struct ConfigFileError: Error, Sendable, CustomStringConvertible {
    /// What is wrong and what to do.
    public let reason: String
    /// Creates an error.
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// The node configuration file: its keys (the `stoq node` flags in camelCase, docs/CONFIG.md),
/// their types and defaults, the old keys still read (with a warning), and the effective
/// configuration `stoq node --print-config` prints.
///
/// Reading is strict so a file cannot mislead: an unknown key or a wrong type is refused with a
/// line naming the key and the type expected, and relative paths resolve against the file's
/// directory (not the working directory).
public enum NodeConfigurationFile {
    /// The type a key takes.
    public enum Kind: Sendable {
        /// Any string.
        case string
        /// A file or directory path (relative: against the file's directory; `~/` is `$HOME`).
        case path
        /// An IPv6 address `[ADDR]:PORT`.
        case address
        /// A list of IPv6 addresses (a single string with commas is accepted too).
        case addresses
        /// An integer, in the unit given (`bytes`, `ms`, …).
        case integer(String)
        /// `true` or `false`.
        case bool
        /// A list of strings (a single string is accepted too).
        case strings
        /// A port (bound to `[::1]`) or an IPv6 address.
        case admin

        /// What the key takes, for error messages and docs/CONFIG.md.
        public var expected: String {
            switch self {
            case .string: return "a string"
            case .path: return "a string (a path)"
            case .address: return "a string, an IPv6 address like '[::1]:4433'"
            case .addresses: return "a list of IPv6 addresses like [\"[::1]:4433\"]"
            case .integer(let unit): return "an integer (\(unit))"
            case .bool: return "true or false"
            case .strings: return "a list of strings"
            case .admin: return "a port number or an IPv6 address like '[::1]:9464'"
            }
        }
    }

    /// One key of the file.
    public struct Key: Sendable {
        /// The key, e.g. `cacheBytes`.
        public let name: String
        /// The `stoq node` flag setting it, e.g. `--cache-bytes`; nil for file-only keys.
        public let flag: String?
        /// Its type.
        public let kind: Kind
        let apply: @Sendable (inout NodeConfiguration, ConfigValue) -> Void
    }

    private static func key(_ name: String, flag: Bool = true, _ kind: Kind, _ apply: @escaping @Sendable (inout NodeConfiguration, ConfigValue) -> Void) -> Key {
        Key(name: name, flag: flag ? "--" + flagName(name) : nil, kind: kind, apply: apply)
    }

    /// `cacheBytes` → `cache-bytes`.
    static func flagName(_ key: String) -> String {
        var out = ""
        for c in key {
            if c.isUppercase { out += "-" + c.lowercased() } else { out.append(c) }
        }
        return out
    }

    private static func addresses(_ v: ConfigValue) -> [PeerAddress] { (v.list ?? []).compactMap(PeerAddress.init) }

    /// Every key, in the order `--print-config` prints them.
    public static let keys: [Key] = [
        key("name", .string) { c, v in c.name = v.string ?? c.name },
        key("listen", .address) { c, v in if let a = v.string.flatMap(PeerAddress.init) { c.listen = a } },
        key("cert", .path) { c, v in c.certificate = v.string ?? c.certificate },
        key("key", .path) { c, v in c.key = v.string ?? c.key },
        key("ca", .path) { c, v in c.ca = v.string ?? c.ca },
        key("store", .path) { c, v in c.store = v.string ?? c.store },
        key("storeFormat", .string) { c, v in c.storeFormat = v.string },
        key("storeVerifySeconds", flag: false, .integer("seconds")) { c, v in c.storeVerifySeconds = v.integer },
        key("role", .strings) { c, v in c.roles = v.list ?? c.roles },
        key("region", .string) { c, v in c.region = v.string },
        key("location", .string) { c, v in c.location = v.string },
        key("peers", .addresses) { c, v in c.upstream = addresses(v) },
        key("watch", .addresses) { c, v in c.peers = addresses(v) },
        key("admin", .admin) { c, v in
            switch v {
            case .integer(let port): c.admin = PeerAddress(host: "::1", port: port)
            case .string(let s): c.admin = Int(s).map { PeerAddress(host: "::1", port: $0) } ?? PeerAddress(s)
            default: break
            }
        },
        key("cacheBytes", .integer("bytes")) { c, v in c.cacheBytes = v.integer },
        key("rateLimit", .integer("bytes/s")) { c, v in c.rateLimitBytesPerSecond = v.integer.map { UInt64(max(0, $0)) } },
        key("serveRate", .integer("bytes/s")) { c, v in c.throttle = with(c.throttle ?? ServeThrottleSettings()) { $0.totalBytesPerSecond = v.integer.map { UInt64(max(0, $0)) } } },
        key("connectionServeRate", .integer("bytes/s")) { c, v in c.throttle = with(c.throttle ?? ServeThrottleSettings()) { $0.connectionBytesPerSecond = v.integer.map { UInt64(max(0, $0)) } } },
        key("serveBurstBytes", flag: false, .integer("bytes")) { c, v in c.throttle = with(c.throttle ?? ServeThrottleSettings()) { $0.connectionBurstBytes = v.integer } },
        key("serveQuantumBytes", flag: false, .integer("bytes")) { c, v in c.throttle = with(c.throttle ?? ServeThrottleSettings()) { $0.quantumBytes = v.integer } },
        key("serveInteractiveBytes", flag: false, .integer("bytes")) { c, v in c.throttle = with(c.throttle ?? ServeThrottleSettings()) { $0.interactiveBytes = v.integer } },
        key("probeInterval", .integer("ms")) { c, v in c.health = with(c.health ?? HealthSettings()) { $0.intervalMilliseconds = v.integer } },
        key("probeTimeout", .integer("ms")) { c, v in c.health = with(c.health ?? HealthSettings()) { $0.timeoutMilliseconds = v.integer } },
        key("probeFailures", .integer("probes")) { c, v in c.health = with(c.health ?? HealthSettings()) { $0.failureThreshold = v.integer } },
        key("probeRecoveries", flag: false, .integer("probes")) { c, v in c.health = with(c.health ?? HealthSettings()) { $0.recoveryThreshold = v.integer } },
        key("noProbes", flag: false, .bool) { c, v in c.health = with(c.health ?? HealthSettings()) { $0.enabled = !(v.bool ?? false) } },
        key("gossipInterval", .integer("ms")) { c, v in c.routing = with(c.routing ?? RoutingSettings()) { $0.gossipIntervalMilliseconds = v.integer } },
        key("noRouting", .bool) { c, v in c.routing = with(c.routing ?? RoutingSettings()) { $0.enabled = !(v.bool ?? false) } },
        key("maxConnections", .integer("connections")) { c, v in c.maxConnections = v.integer },
        key("maxConnectionsPerAddress", .integer("connections")) { c, v in c.maxConnectionsPerAddress = v.integer },
        key("eventLoops", .integer("loops")) { c, v in c.eventLoops = v.integer },
        key("requestTimeoutMs", .integer("ms")) { c, v in c.limits = with(c.limits ?? PeerLimits()) { $0.requestTimeoutMilliseconds = v.integer ?? $0.requestTimeoutMilliseconds } },
        key("maxPendingRequests", flag: false, .integer("streams")) { c, v in c.limits = with(c.limits ?? PeerLimits()) { $0.maxPendingRequests = v.integer ?? $0.maxPendingRequests } },
        key("maxResponses", flag: false, .integer("responses")) { c, v in c.limits = with(c.limits ?? PeerLimits()) { $0.maxResponses = v.integer ?? $0.maxResponses } },
        key("maxResponseBytes", flag: false, .integer("bytes")) { c, v in c.limits = with(c.limits ?? PeerLimits()) { $0.maxResponseBytes = v.integer ?? $0.maxResponseBytes } },
        key("responseStallTimeoutMs", flag: false, .integer("ms")) { c, v in c.limits = with(c.limits ?? PeerLimits()) { $0.responseStallTimeoutMilliseconds = v.integer ?? $0.responseStallTimeoutMilliseconds } },
        key("idleTimeoutSeconds", flag: false, .integer("seconds")) { c, v in c.idleTimeoutSeconds = v.integer },
        key("maxRelayStreams", flag: false, .integer("streams")) { c, v in c.maxRelayStreams = v.integer },
        key("maxRelayStreamsPerConnection", flag: false, .integer("streams")) { c, v in c.maxRelayStreamsPerConnection = v.integer },
        key("logLevel", .string) { c, v in c.logLevel = v.string },
        key("logFormat", .string) { c, v in c.logFormat = v.string },
        key("dht", .bool) { c, v in c.dht = v.bool },
        key("bootstrap", .addresses) { c, v in c.bootstrap = addresses(v) },
        key("requireCt", .path) { c, v in c.requireCt = v.string },
        key("requireEnrolment", .path) { c, v in c.requireEnrolment = v.string },
        key("enrolmentSecret", .path) { c, v in c.enrolmentSecret = v.string },
        key("shards", .path) { c, v in c.shards = v.string },
        key("http", .string) { c, v in c.http = v.string },
        key("httpCert", .path) { c, v in c.httpCert = v.string },
        key("httpKey", .path) { c, v in c.httpKey = v.string },
        key("accessLog", .path) { c, v in c.accessLog = v.string },
        key("accessLogFormat", .string) { c, v in c.accessLogFormat = v.string },
        key("publisherKey", .path) { c, v in c.publisherKey = v.string },
        key("publicRead", .bool) { c, v in c.publicRead = v.bool },
        key("publisher", .strings) { c, v in c.publishers = v.list },
        key("operator", .strings) { c, v in c.operators = v.list },
        key("relayFor", .strings) { c, v in c.relayFor = v.list },
        key("relayOpen", .bool) { c, v in c.relayOpen = v.bool },
        key("privateReads", .bool) { c, v in c.privateReads = v.bool },
        key("privateReader", .strings) { c, v in c.privateReaders = v.list },
        key("issuer", .address) { c, v in c.issuer = v.string.flatMap(PeerAddress.init) },
        key("caDir", .path) { c, v in c.caDir = v.string },
        key("caKey", .path) { c, v in c.caKey = v.string },
        key("maxLifetime", .string) { c, v in c.maxLifetime = v.string },
        key("ctLog", .path) { c, v in c.ctLog = v.string },
        key("noAuditLog", .bool) { c, v in c.noAuditLog = v.bool },
        key("auditSignSeconds", .integer("seconds")) { c, v in c.auditSignSeconds = v.integer },
        key("auditCtLog", .path) { c, v in c.auditCtLog = v.string },
        key("auditSegmentBytes", flag: false, .integer("bytes")) { c, v in c.auditSegmentBytes = v.integer },
        key("auditSegments", flag: false, .integer("segments")) { c, v in c.auditSegments = v.integer },
    ]

    private static func with<T>(_ value: T, _ change: (inout T) -> Void) -> T {
        var v = value
        change(&v)
        return v
    }

    /// The roles a node can take (key `role`, flag `--role`).
    public static let roles = ["origin", "edge", "client", "relay", "storage", "issuer"]

    /// The key named `name`.
    public static func key(named name: String) -> Key? { keys.first { $0.name == name } }

    /// Old keys read for one release, with a warning: old name → new name.
    public static let renamed: [String: String] = [
        "certificate": "cert", "roles": "role", "upstream": "peers", "rateLimitBytesPerSecond": "rateLimit",
        "publishers": "publisher",
    ]

    /// Old nested objects: each field → the flat key it became (`!` before the key: the boolean inverted).
    public static let nested: [String: [String: String]] = [
        "health": ["intervalMilliseconds": "probeInterval", "timeoutMilliseconds": "probeTimeout", "failureThreshold": "probeFailures",
                   "recoveryThreshold": "probeRecoveries", "enabled": "!noProbes"],
        "throttle": ["totalBytesPerSecond": "serveRate", "connectionBytesPerSecond": "connectionServeRate",
                     "connectionBurstBytes": "serveBurstBytes", "quantumBytes": "serveQuantumBytes", "interactiveBytes": "serveInteractiveBytes"],
        "routing": ["enabled": "!noRouting", "gossipIntervalMilliseconds": "gossipInterval"],
        "limits": ["requestTimeoutMilliseconds": "requestTimeoutMs", "maxPendingRequests": "maxPendingRequests", "maxResponses": "maxResponses",
                   "maxResponseBytes": "maxResponseBytes", "responseStallTimeoutMilliseconds": "responseStallTimeoutMs"],
    ]

    // MARK: Reading

    /// JSON as read, before the types are checked.
    indirect enum JSON: Decodable {
        case null, bool(Bool), integer(Int), number(Double), string(String), array([JSON]), object([String: JSON])

        init(from decoder: any Decoder) throws {
            let c = try decoder.singleValueContainer()
            if c.decodeNil() { self = .null }
            else if let b = try? c.decode(Bool.self) { self = .bool(b) }
            else if let i = try? c.decode(Int.self) { self = .integer(i) }
            else if let d = try? c.decode(Double.self) { self = .number(d) }
            else if let s = try? c.decode(String.self) { self = .string(s) }
            else if let a = try? c.decode([JSON].self) { self = .array(a) }
            else { self = .object(try c.decode([String: JSON].self)) }
        }

        /// What it is, for "…, not a string".
        var what: String {
            switch self {
            case .null: return "null"
            case .bool: return "a boolean"
            case .integer: return "an integer"
            case .number: return "a number with a fraction"
            case .string: return "a string"
            case .array: return "a list"
            case .object: return "an object"
            }
        }
    }

    /// Reads the configuration file at `path`: its keys, checked and with relative paths resolved
    /// against the file's directory, and the warnings about old keys (one line each).
    /// - Throws: ``ConfigFileError`` whose reason names the file and the key.
    public static func read(path: String) throws(ConfigFileError) -> (values: [String: ConfigValue], warnings: [String]) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ConfigFileError("cannot read the config file \(path); check the path (see docs/CONFIG.md for its keys)")
        }
        let directory = (absolute(path, relativeTo: FileManager.default.currentDirectoryPath) as NSString).deletingLastPathComponent
        return try parse(data, file: path, directory: directory)
    }

    /// Parses a configuration file's bytes (see ``read(path:)``); `file` names it in messages.
    public static func parse(_ data: Data, file: String, directory: String) throws(ConfigFileError) -> (values: [String: ConfigValue], warnings: [String]) {
        let prefix = "config \(file)"
        let document: JSON
        do { document = try JSONDecoder().decode(JSON.self, from: data) } catch {
            throw ConfigFileError("\(prefix): not valid JSON; check it with `python3 -m json.tool \(file)` (see docs/CONFIG.md)")
        }
        guard case .object(var object) = document else {
            throw ConfigFileError("\(prefix): must be a JSON object ({\"name\": …}), not \(document.what); see docs/CONFIG.md")
        }
        var warnings = [String]()
        // An old file has `upstream` (it was required): its `peers` are the peers to watch.
        if object["upstream"] != nil, let old = object.removeValue(forKey: "peers") {
            if object["watch"] != nil { throw ConfigFileError("\(prefix): keys 'peers' (old meaning, next to 'upstream') and 'watch' both given; keep 'watch'") }
            object["watch"] = old
            warnings.append("\(prefix): key 'peers' next to 'upstream' is read in its old meaning, peers to watch; rename it 'watch' (and 'upstream' to 'peers')")
        }
        for (old, new) in renamed.sorted(by: { $0.key < $1.key }) {
            guard let value = object.removeValue(forKey: old) else { continue }
            if object[new] != nil { throw ConfigFileError("\(prefix): keys '\(old)' (old name) and '\(new)' both given; keep '\(new)'") }
            object[new] = value
            warnings.append("\(prefix): key '\(old)' is deprecated; rename it '\(new)' (read as '\(new)' for now)")
        }
        if object["latitude"] != nil || object["longitude"] != nil {
            let lat = object.removeValue(forKey: "latitude"), lon = object.removeValue(forKey: "longitude")
            func degrees(_ v: JSON?) -> String? {
                switch v { case .integer(let i): return String(i); case .number(let d): return String(d); default: return nil }
            }
            guard let la = degrees(lat), let lo = degrees(lon) else {
                throw ConfigFileError("\(prefix): keys 'latitude' and 'longitude' must both be numbers; better, write 'location': \"LAT,LON\"")
            }
            if object["location"] != nil { throw ConfigFileError("\(prefix): keys 'latitude'/'longitude' (old) and 'location' both given; keep 'location'") }
            object["location"] = .string("\(la),\(lo)")
            warnings.append("\(prefix): keys 'latitude' and 'longitude' are deprecated; write \"location\": \"\(la),\(lo)\"")
        }
        for (group, fields) in nested.sorted(by: { $0.key < $1.key }) {
            guard let value = object.removeValue(forKey: group) else { continue }
            if case .null = value { continue }
            guard case .object(let inner) = value else {
                throw ConfigFileError("\(prefix): key '\(group)' (old) must be an object, not \(value.what); better, write its fields as top-level keys (\(fields.values.map { $0.trimmingCharacters(in: ["!"]) }.sorted().joined(separator: ", ")))")
            }
            var moved = [String]()
            for (field, v) in inner.sorted(by: { $0.key < $1.key }) {
                guard let target = fields[field] else {
                    throw ConfigFileError("\(prefix): unknown key '\(group).\(field)'\(suggestion(field, among: Array(fields.keys)).map { " (did you mean '\(group).\($0)'?)" } ?? ""); see docs/CONFIG.md")
                }
                let inverted = target.hasPrefix("!")
                let name = inverted ? String(target.dropFirst()) : target
                if object[name] != nil { throw ConfigFileError("\(prefix): keys '\(group).\(field)' (old) and '\(name)' both given; keep '\(name)'") }
                if inverted, case .bool(let b) = v { object[name] = .bool(!b) } else { object[name] = v }
                moved.append("'\(group).\(field)' → '\(name)'" + (inverted ? " (inverted)" : ""))
            }
            warnings.append("\(prefix): key '\(group)' is deprecated; write its fields as top-level keys: \(moved.joined(separator: ", "))")
        }
        var values = [String: ConfigValue]()
        for (name, json) in object.sorted(by: { $0.key < $1.key }) {
            guard let key = key(named: name) else {
                let candidates = keys.map(\.name) + Array(renamed.keys) + Array(nested.keys)
                let hint = suggestion(name, among: candidates).map { " (did you mean '\(renamed[$0] ?? $0)'?)" } ?? ""
                throw ConfigFileError("\(prefix): unknown key '\(name)'\(hint); see docs/CONFIG.md for the keys")
            }
            if case .null = json { continue }
            values[name] = try check(key, json, prefix: prefix, directory: directory)
        }
        return (values, warnings)
    }

    /// Checks one value's type (and for addresses, their form); resolves paths.
    static func check(_ key: Key, _ json: JSON, prefix: String, directory: String) throws(ConfigFileError) -> ConfigValue {
        func wrong() -> ConfigFileError {
            ConfigFileError("\(prefix): key '\(key.name)' must be \(key.kind.expected), not \(json.what); see docs/CONFIG.md")
        }
        func badAddress(_ text: String) -> ConfigFileError {
            ConfigFileError("\(prefix): key '\(key.name)': '\(text)' is not an IPv6 address like '[::1]:4433' (STOQ is IPv6-only)")
        }
        func strings() throws(ConfigFileError) -> [String] {
            switch json {
            case .string(let s): return [s]
            case .array(let items):
                var out = [String]()
                for item in items {
                    guard case .string(let s) = item else {
                        throw ConfigFileError("\(prefix): key '\(key.name)' must be \(key.kind.expected), but it holds \(item.what); see docs/CONFIG.md")
                    }
                    out.append(s)
                }
                return out
            default: throw wrong()
            }
        }
        switch key.kind {
        case .string:
            guard case .string(let s) = json else { throw wrong() }
            if key.name == "location" {
                do { _ = try NodeConfiguration.parseLocation(s) } catch { throw ConfigFileError("\(prefix): key 'location': \((error as? NodeError)?.reason ?? "not LAT,LON")") }
            }
            return .string(s)
        case .path:
            guard case .string(let s) = json else { throw wrong() }
            guard !s.isEmpty else { throw ConfigFileError("\(prefix): key '\(key.name)' is an empty path; give a file or directory, or leave the key out") }
            if s == "-" { return .string(s) }  // standard error (accessLog)
            return .string(absolute(s, relativeTo: directory))
        case .address:
            guard case .string(let s) = json else { throw wrong() }
            guard PeerAddress(s) != nil else { throw badAddress(s) }
            return .string(s)
        case .addresses:
            var list = try strings()
            if case .string = json { list = list[0].split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
            for s in list where PeerAddress(s) == nil { throw badAddress(s) }
            return .list(list)
        case .integer:
            guard case .integer(let i) = json else { throw wrong() }
            return .integer(i)
        case .bool:
            guard case .bool(let b) = json else { throw wrong() }
            return .bool(b)
        case .strings:
            let list = try strings()
            if key.name == "role", let bad = list.first(where: { !roles.contains($0) }) {
                throw ConfigFileError("\(prefix): key 'role': '\(bad)' is not a role; use \(roles.joined(separator: ", "))")
            }
            return .list(list)
        case .admin:
            switch json {
            case .integer(let port) where (0...65535).contains(port): return .integer(port)
            case .string(let s) where PeerAddress(s) != nil || Int(s).map({ (0...65535).contains($0) }) == true: return .string(s)
            case .string(let s): throw badAddress(s)
            default: throw wrong()
            }
        }
    }

    /// The closest key to a misspelt one (`cache_bytes` → `cacheBytes`), if any is close.
    static func suggestion(_ name: String, among candidates: [String]) -> String? {
        func norm(_ s: String) -> [Character] { Array(s.lowercased().filter { $0.isLetter || $0.isNumber }) }
        let n = norm(name)
        var best: (String, Int)?
        for candidate in candidates {
            let d = distance(n, norm(candidate))
            if d <= max(1, min(3, n.count / 3)), d < (best?.1 ?? Int.max) { best = (candidate, d) }
        }
        return best?.0
    }

    static func distance(_ a: [Character], _ b: [Character]) -> Int {
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }

    /// `path` made absolute: `~/…` against `$HOME`, a relative path against `directory`.
    public static func absolute(_ path: String, relativeTo directory: String) -> String {
        if path.hasPrefix("/") || PKCS11URI.isURI(path) { return path }
        if path == "~" || path.hasPrefix("~/") { return home + String(path.dropFirst()) }
        return ((directory as NSString).appendingPathComponent(path) as NSString).standardizingPath
    }

    // MARK: Defaults and the effective configuration

    /// `$HOME` (Foundation's NSHomeDirectory() reads the password database on Linux).
    static var home: String {
        ProcessInfo.processInfo.environment["HOME"].flatMap { $0.isEmpty ? nil : $0 } ?? NSHomeDirectory()
    }

    /// Where `stoq init` writes certificates: `~/.stoq/certs`.
    public static var certificateDirectory: String { home + "/.stoq/certs" }

    /// The default of each key given the others (the name picks the certificate and the store);
    /// nil: unset by default.
    public static func defaultValue(_ key: String, name: String) -> ConfigValue? {
        switch key {
        case "name": return .string("node")
        case "listen": return .string("[::1]:4433")
        case "cert": return .string(certificateDirectory + "/\(name).pem")
        case "key": return .string(certificateDirectory + "/\(name).key")
        case "ca": return .string(certificateDirectory + "/ca.pem")
        case "store":
            if let e = ProcessInfo.processInfo.environment["STOQ_STORE"], !e.isEmpty { return .string(e) }
            return .string(home + "/.stoq/" + name)
        case "role": return .list(["origin"])
        case "peers", "watch", "bootstrap", "publisher", "operator", "relayFor", "privateReader": return .list([])
        case "cacheBytes": return .integer(1 << 30)
        case "storeVerifySeconds": return .integer(Int(DiskChunkStore.defaultVerifyInterval))
        case "serveBurstBytes": return .integer(256 << 10)
        case "serveQuantumBytes": return .integer(16 << 10)
        case "serveInteractiveBytes": return .integer(64 << 10)
        case "probeInterval": return .integer(1000)
        case "probeTimeout": return .integer(100)
        case "probeFailures": return .integer(3)
        case "probeRecoveries": return .integer(1)
        case "gossipInterval": return .integer(2000)
        case "maxConnections": return .integer(NodeConfiguration.defaultMaxConnections)
        case "maxConnectionsPerAddress": return .integer(NodeConfiguration.defaultMaxConnectionsPerAddress)
        case "eventLoops": return .integer(NodeConfiguration.defaultEventLoops)
        case "requestTimeoutMs": return .integer(PeerLimits().requestTimeoutMilliseconds)
        case "maxPendingRequests": return .integer(PeerLimits().maxPendingRequests)
        case "maxResponses": return .integer(PeerLimits().maxResponses)
        case "maxResponseBytes": return .integer(PeerLimits().maxResponseBytes)
        case "responseStallTimeoutMs": return .integer(PeerLimits().responseStallTimeoutMilliseconds)
        case "idleTimeoutSeconds": return .integer(30)
        case "maxRelayStreams": return .integer(512)
        case "maxRelayStreamsPerConnection": return .integer(64)
        case "logLevel": return .string("info")
        case "logFormat": return .string("text")
        case "noProbes", "noRouting", "dht", "publicRead", "noAuditLog", "relayOpen", "privateReads": return .bool(false)
        case "auditSignSeconds": return .integer(60)
        case "auditSegmentBytes": return .integer(16 << 20)
        case "auditSegments": return .integer(64)
        case "maxLifetime": return .string("24h")
        case "accessLogFormat": return .string("combined")
        default: return nil
        }
    }

    /// `values` with every unset key that has a default given it.
    public static func effective(_ values: [String: ConfigValue]) -> [String: ConfigValue] {
        var out = values
        let name = values["name"]?.string ?? "node"
        for key in keys where out[key.name] == nil {
            out[key.name] = defaultValue(key.name, name: name)
        }
        return out
    }

    /// The node configuration `values` describe (unset keys take their defaults).
    /// - Throws: ``ConfigFileError`` for a value the type check could not catch (a bad listen address).
    public static func configuration(_ values: [String: ConfigValue]) throws(ConfigFileError) -> NodeConfiguration {
        let v = effective(values)
        guard let listen = v["listen"]?.string.flatMap(PeerAddress.init) else {
            throw ConfigFileError("listen: '\(v["listen"]?.string ?? "")' is not an IPv6 address like '[::1]:4433'")
        }
        var c = NodeConfiguration(
            name: v["name"]?.string ?? "node", listen: listen, certificate: v["cert"]?.string ?? "", key: v["key"]?.string ?? "",
            ca: v["ca"]?.string ?? "", store: v["store"]?.string ?? "", roles: v["role"]?.list ?? ["origin"]
        )
        // Only the keys set (file or flags): an unset key stays nil in the configuration, exactly
        // as before the file format existed; the defaults above are what the node uses for them.
        for key in keys {
            if let value = values[key.name] { key.apply(&c, value) }
        }
        if c.roles.isEmpty { c.roles = ["origin"] }
        return c
    }

    /// The configuration as a config file: every key in ``keys`` order, `null` for unset ones.
    public static func render(_ values: [String: ConfigValue]) -> String {
        let v = effective(values)
        let lines = keys.map { key in "  " + ConfigValue.quote(key.name) + ": " + (v[key.name]?.json ?? "null") }
        return "{\n" + lines.joined(separator: ",\n") + "\n}"
    }
}
