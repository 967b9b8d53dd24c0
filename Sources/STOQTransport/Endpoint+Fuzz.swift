import NIOCore

extension Endpoint {
    /// libFuzzer entry: feeds one datagram into a fresh sans-IO server (the same header
    /// decoding, first-packet checks and ngtcp2 connection an endpoint uses, without a
    /// socket). Must never crash, whatever the bytes.
    public static func fuzzDatagram(_ bytes: [UInt8]) {
        fuzzDatagrams([bytes])
    }

    /// libFuzzer entry: feeds a sequence of datagrams into one sans-IO server, so later
    /// datagrams can reach the connection an earlier one created.
    public static func fuzzDatagrams(_ datagrams: [[UInt8]]) {
        var server = FuzzServer()
        for d in datagrams { server.feed(d) }
    }
}

/// A socket-less server endpoint for fuzzing (no address validation, no certificate).
struct FuzzServer {
    private var connections: [ConnectionID: QUICConnection] = [:]
    private let settings: QUICConnection.Settings?
    private var now: UInt64 = 1_000_000_000
    private let path: QUICPath

    init() {
        var config = EndpointConfiguration()
        config.addressValidation = false
        let tls = TLSConfiguration(certificateChainPEM: nil, privateKeyPEM: nil)
        settings = (try? TLSCredentials(certificateChainPEM: nil, privateKeyPEM: nil, trustRootsPEM: nil)).map {
            QUICConnection.Settings(endpoint: config, tls: tls, credentials: $0, statelessResetSecret: NGTCP2Packet.randomBytes(32))
        }
        path = QUICPath(
            local: try! SocketAddress(ipAddress: "::1", port: 4433), remote: try! SocketAddress(ipAddress: "::1", port: 50000))
    }

    mutating func feed(_ bytes: [UInt8]) {
        guard let settings, !bytes.isEmpty, bytes.count <= 65527 else { return }
        now += 1_000_000
        let data = ByteBuffer(bytes: bytes)
        guard let header = NGTCP2Packet.decode(data) else { return }
        let conn: QUICConnection
        if let existing = connections[header.dcid] {
            conn = existing
        } else {
            guard header.isLong, connections.count < 16, let initial = NGTCP2Packet.accept(data),
                let created = try? QUICConnection(
                    serverPath: path, clientSCID: initial.scid, clientDCID: initial.dcid, originalDCID: nil,
                    retrySCID: nil, token: initial.token, version: initial.version, settings: settings, now: now)
            else { return }
            conn = created
            connections[initial.dcid] = created
            for cid in created.sourceConnectionIDs { connections[cid] = created }
        }
        conn.handle(datagram: data, path: path, now: now)
        while conn.pollTransmit(now: now) != nil {}
        while conn.pollEvent() != nil {}
        if let t = conn.pollTimeout(), t <= now { conn.handleTimeout(now: now) }
        if conn.isClosed { connections = connections.filter { $0.value !== conn } }
    }
}
