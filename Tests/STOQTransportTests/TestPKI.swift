import Foundation

/// Test certificates made with the `openssl` CLI in a temporary directory.
/// (Temporary until STOQIdentity's CertificateAuthority is used here.)
struct TestPKI {
    struct Node {
        let certificatePEM: String
        let keyPEM: String
    }
    let dir: URL
    let caPEM: String

    static func run(_ args: [String], in dir: URL) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        p.arguments = args
        p.currentDirectoryURL = dir
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        guard p.terminationStatus == 0 else {
            throw NSError(domain: "TestPKI", code: Int(p.terminationStatus), userInfo: [NSLocalizedDescriptionKey: "openssl \(args.joined(separator: " ")) failed"])
        }
    }

    /// Creates a CA (SEC1 key) named `name`.
    init(name: String = "STOQ Test CA") throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("stoq-pki-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        try Self.run(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"], in: dir)
        try Self.run([
            "req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=\(name)", "-days", "2", "-out", "ca.pem",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        ], in: dir)
        caPEM = try String(contentsOf: dir.appendingPathComponent("ca.pem"), encoding: .utf8)
        try "".write(to: dir.appendingPathComponent("index.txt"), atomically: true, encoding: .utf8)
        try "01\n".write(to: dir.appendingPathComponent("serial"), atomically: true, encoding: .utf8)
        let cnf = """
            [ca]
            default_ca = d
            [d]
            database = \(dir.path)/index.txt
            new_certs_dir = \(dir.path)
            serial = \(dir.path)/serial
            certificate = \(dir.path)/ca.pem
            private_key = \(dir.path)/ca.key
            default_md = sha256
            policy = p
            unique_subject = no
            copy_extensions = copy
            [p]
            commonName = supplied
            """
        try cnf.write(to: dir.appendingPathComponent("ca.cnf"), atomically: true, encoding: .utf8)
    }

    /// Issues a node certificate (PKCS#8 key). `expired` dates it in 2020.
    func issue(_ name: String, expired: Bool = false) throws -> Node {
        try Self.run(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "\(name).key"], in: dir)
        try Self.run([
            "req", "-new", "-key", "\(name).key", "-subj", "/CN=\(name)", "-out", "\(name).csr",
            "-addext", "subjectAltName=DNS:\(name),DNS:localhost,IP:::1",
            "-addext", "basicConstraints=critical,CA:FALSE",
            "-addext", "keyUsage=critical,digitalSignature",
            "-addext", "extendedKeyUsage=serverAuth,clientAuth",
        ], in: dir)
        var args = ["ca", "-batch", "-config", "ca.cnf", "-in", "\(name).csr", "-out", "\(name).pem", "-notext"]
        if expired {
            args += ["-startdate", "20200101000000Z", "-enddate", "20200102000000Z"]
        } else {
            args += ["-days", "1"]
        }
        try Self.run(args, in: dir)
        return Node(
            certificatePEM: try String(contentsOf: dir.appendingPathComponent("\(name).pem"), encoding: .utf8),
            keyPEM: try String(contentsOf: dir.appendingPathComponent("\(name).key"), encoding: .utf8))
    }
}
