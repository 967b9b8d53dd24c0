import X509

extension CertificateInfo {
    /// The facts of a DER certificate (a peer's leaf from its handshake); nil when it does not parse.
    public init?(derEncoded der: [UInt8]) {
        guard let certificate = try? Certificate(derEncoded: der) else { return nil }
        self.init(certificate)
    }
}
