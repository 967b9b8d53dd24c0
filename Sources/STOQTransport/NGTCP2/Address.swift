import NIOCore

extension SocketAddress {
    /// Whether this is an IPv6 address outside ::ffff:0:0/96 (STOQ refuses everything else).
    var isPlainIPv6: Bool {
        guard case .v6(let a) = self else { return false }
        let addr = a.address.sin6_addr
        return withUnsafeBytes(of: addr) { b in
            !(b[0..<10].allSatisfy { $0 == 0 } && b[10] == 0xff && b[11] == 0xff)
        }
    }
}
