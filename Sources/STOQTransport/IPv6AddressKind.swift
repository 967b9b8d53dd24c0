import NIOCore

/// What an IPv6 address is, as far as deciding where a node may send datagrams goes.
///
/// The prefixes are those of the IANA IPv6 special-purpose address registry (RFC 6890 and
/// successors). ``uniqueLocal`` and ``global`` both have global *scope* in the RFC 4007 sense;
/// ``loopback`` and ``linkLocal`` do not leave the host or the link.
public enum IPv6AddressKind: String, Sendable, Hashable, CustomStringConvertible {
    /// `::`: no address (a wildcard for binding, never a destination).
    case unspecified
    /// `::1`.
    case loopback
    /// An IPv4 address in IPv6 clothing: `::ffff:0:0/96` (mapped), `::/96` (compatible),
    /// `64:ff9b::/96` and `64:ff9b:1::/48` (NAT64). STOQ is IPv6-only.
    case ipv4Embedded
    /// `ff00::/8`.
    case multicast
    /// `fe80::/10`: valid on one link only, needs an interface (scope id).
    case linkLocal
    /// `fec0::/10`: deprecated site-local.
    case siteLocal
    /// `fc00::/7` (ULA, e.g. the `fd00::/8` test networks).
    case uniqueLocal
    /// `2001:db8::/32` and `3fff::/20`: documentation, never routed.
    case documentation
    /// `100::/64`: discard-only.
    case discard
    /// Any other unicast address.
    case global

    /// The kind of the 16 bytes of an IPv6 address (network order); shorter input is padded
    /// with zeros.
    public init(bytes: some Collection<UInt8>) {
        var a: [UInt8] = Array(bytes.prefix(16))
        while a.count < 16 { a.append(0) }
        self = a.withUnsafeBytes { Self(raw: $0) }
    }

    /// Classifies 16 raw address bytes without allocating (the receive path calls this per datagram).
    init(raw a: UnsafeRawBufferPointer) {
        func zeros(_ r: Range<Int>) -> Bool {
            for i in r where a[i] != 0 { return false }
            return true
        }
        if zeros(0..<15) && a[15] <= 1 {
            self = a[15] == 0 ? .unspecified : .loopback
        } else if zeros(0..<10) && a[10] == 0xff && a[11] == 0xff {
            self = .ipv4Embedded
        } else if zeros(0..<12) {
            self = .ipv4Embedded  // ::a.b.c.d (IPv4-compatible, deprecated)
        } else if a[0] == 0x00 && a[1] == 0x64 && a[2] == 0xff && a[3] == 0x9b && (zeros(4..<12) || (a[4] == 0 && a[5] == 1)) {
            self = .ipv4Embedded
        } else if a[0] == 0xff {
            self = .multicast
        } else if a[0] == 0xfe && a[1] & 0xc0 == 0x80 {
            self = .linkLocal
        } else if a[0] == 0xfe && a[1] & 0xc0 == 0xc0 {
            self = .siteLocal
        } else if a[0] & 0xfe == 0xfc {
            self = .uniqueLocal
        } else if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8) || (a[0] == 0x3f && a[1] == 0xff && a[2] & 0xf0 == 0) {
            self = .documentation
        } else if a[0] == 0x01 && zeros(1..<8) {
            self = .discard
        } else {
            self = .global
        }
    }

    /// The kind of a numeric IPv6 address (`fd00::1`, `[::1]`); nil when it is not one.
    public init?(_ text: String) {
        let host = text.hasPrefix("[") && text.hasSuffix("]") ? String(text.dropFirst().dropLast()) : text
        guard host.contains(":"), let address = try? SocketAddress(ipAddress: host, port: 0), let kind = address.ipv6Kind else { return nil }
        self = kind
    }

    /// Whether datagrams to this kind of address can only stay on this host or link.
    public var isHostOrLinkScoped: Bool { self == .loopback || self == .linkLocal }

    /// Whether a QUIC peer can have this address at all (a unicast address that is routed).
    public var isUnicastPeer: Bool {
        switch self {
        case .loopback, .linkLocal, .uniqueLocal, .global: return true
        default: return false
        }
    }

    public var description: String {
        switch self {
        case .unspecified: return "the unspecified address"
        case .loopback: return "loopback"
        case .ipv4Embedded: return "an IPv4 address in IPv6 form"
        case .multicast: return "multicast"
        case .linkLocal: return "link-local"
        case .siteLocal: return "deprecated site-local"
        case .uniqueLocal: return "unique local (ULA)"
        case .documentation: return "a documentation address"
        case .discard: return "discard-only"
        case .global: return "global"
        }
    }
}

extension SocketAddress {
    /// What kind of IPv6 address this is (nil for IPv4 and Unix addresses).
    public var ipv6Kind: IPv6AddressKind? {
        guard case .v6(let a) = self else { return nil }
        return withUnsafeBytes(of: a.address.sin6_addr) { IPv6AddressKind(raw: $0) }
    }

    /// The IPv6 scope id (interface index) of a link-local address, 0 when none was given.
    var ipv6ScopeID: UInt32 {
        guard case .v6(let a) = self else { return 0 }
        return a.address.sin6_scope_id
    }

    /// Why no datagram may be sent to this address, or nil when one may: the checks every
    /// send of an endpoint relies on, so that the kernel never refuses a send for a reason known
    /// in advance (a refused send must not reach the shared socket; see `EndpointCore`).
    var unsendableReason: String? {
        guard let kind = ipv6Kind else { return "it is not an IPv6 address (STOQ is IPv6-only)" }
        guard (port ?? 0) != 0 else { return "port 0 is not a port anyone listens on" }
        switch kind {
        case .unspecified, .multicast, .ipv4Embedded, .discard:
            return "it is \(kind), not the address of a peer"
        case .linkLocal where ipv6ScopeID == 0:
            return "it is link-local and names no interface (write fe80::…%eth0)"
        default:
            return nil
        }
    }
}
