import ArgumentParser
import Foundation
import Logging
import STOQ
import STOQContent
import STOQHTTP
import STOQNode

/// `stoq node --http …`: the node's public HTTP front door (HTTP/3 and HTTPS on one port number).
struct HTTPOptions: ParsableArguments {
    @Option(help: "Serve content to browsers and HTTP clients on this IPv6 address, e.g. '[::1]:8443' or '[::]:443': HTTP/3 on the UDP port, HTTPS (HTTP/1.1, HTTP/2) on the TCP port.") var http: String?
    @Option(help: "Certificate chain (PEM) of the HTTP listener (default: the node's --cert).") var httpCert: String?
    @Option(help: "Private key (PEM) of the HTTP listener (default: the node's --key).") var httpKey: String?
    @Option(help: "Access log of the HTTP listener: a file (appended to) or '-' for standard error.") var accessLog: String?
    @Option(help: "Access log format: combined (default) or json.") var accessLogFormat: String?
    @Option(help: "Publisher key file whose content the HTTP listener may decrypt (default: the store's publisher.key).") var publisherKey: String?

    /// Checks the options as they are parsed (ArgumentParser calls it): the address and the
    /// format. A refusal is a usage error with a message.
    func validate() throws {
        if let http {
            do { _ = try HTTPFrontDoor.parseAddress(http) } catch { throw ValidationError(ErrorReport.peopleText(error)) }
        }
        if let accessLogFormat, AccessLog.Format(rawValue: accessLogFormat) == nil {
            throw ValidationError("--access-log-format takes combined or json, not '\(accessLogFormat)'")
        }
    }

    /// The options as a node runs them: its configuration's keys (`http`, `httpCert`, …: the
    /// file's, with these flags already over them). Refuses options that need `--http` without it.
    func merged(with c: NodeConfiguration) throws -> HTTPOptions {
        var o = self
        o.http = c.http
        o.httpCert = c.httpCert
        o.httpKey = c.httpKey
        o.accessLog = c.accessLog
        o.accessLogFormat = c.accessLogFormat
        o.publisherKey = c.publisherKey
        if o.http == nil, o.httpCert != nil || o.httpKey != nil || o.accessLog != nil {
            throw ValidationError("--http-cert, --http-key and --access-log (config keys httpCert, httpKey, accessLog) need --http ADDRESS")
        }
        try o.validate()
        return o
    }

    /// Checks the files before the node starts: the listener's certificate and key, the publisher key.
    func checkFiles(certificate: String, key: String) throws {
        guard http != nil else { return }
        // A key in a token (`pkcs11:`) is no file: HTTP/3 and HTTPS sign in the token.
        for (option, path) in [("--http-cert", httpCert ?? certificate), ("--http-key", httpKey ?? key)]
        where !PKCS11URI.isURI(path) && !FileManager.default.isReadableFile(atPath: path) {
            throw ValidationError("\(option): cannot read \(path); give a PEM file (the default is the node's own --cert/--key)")
        }
        if let publisherKey {
            do { _ = try PublisherKeyFile.load(path: publisherKey) } catch let e as ContentError {
                throw ValidationError("--publisher-key: \(e.reason)")
            }
        }
    }

    /// A started front door and its access log.
    struct Running {
        let door: HTTPFrontDoor
        let log: AccessLog?
        /// Stops the listeners, then writes what the access log still holds.
        func stop() async {
            await door.stop()
            log?.flush()
        }
    }

    /// Starts the front door of `node` when `--http` was given; prints `http NAME [ADDR]:PORT`.
    func start(node: Node, configuration c: NodeConfiguration, logger: Logger) async throws -> Running? {
        guard let http else { return nil }
        let (host, port) = try HTTPFrontDoor.parseAddress(http)
        let keys: PublisherKeys?
        if let publisherKey {
            keys = try PublisherKeyFile.load(path: publisherKey)
        } else if c.privateReads == true {
            // HTTP readers present no grant: a node enforcing the read right serves them public
            // content only, unless its operator names the publisher key to serve anyway.
            keys = nil
            logger.notice("--private-reads: the HTTP listener serves public content only (HTTP readers present no read grant); give --publisher-key to serve the store's private content over HTTP anyway")
        } else if case .present(let k) = PublisherKeyFile.state(directory: c.store) {
            keys = k
        } else {
            keys = nil
            logger.notice("the HTTP listener holds no publisher key (no publisher.key in the store, no --publisher-key): only public content (put with --public) is served; other content answers 403")
        }
        let log = try accessLog.map { try AccessLog(path: $0, format: AccessLog.Format(rawValue: accessLogFormat ?? "combined") ?? .combined) }
        // Public contents' keys first (the node's own `public.keys`, those an origin handed down),
        // then the publisher key, but only for a content it really opens: another publisher's
        // directory must not be listed by a node that cannot read its files.
        let readKey = NodeContentSource.nodeReadKey(node: node, publisher: keys)
        let responder = ContentResponder(source: NodeContentSource(node: node, readKey: readKey), accessLog: log)
        let frontDoor = HTTPFrontDoor(configuration: HTTPListenerConfiguration(
            host: host, port: port, certificatePath: httpCert ?? c.certificate, keyPath: httpKey ?? c.key, responder: responder), logger: logger)
        let bound = try await frontDoor.start()
        print("http \(c.name) [\(host)]:\(bound)")
        fflush(nil)
        return Running(door: frontDoor, log: log)
    }
}
