import Foundation
import STOQNode
import Testing

/// The node configuration file (docs/CONFIG.md): keys are the flags in camelCase, nothing is
/// ignored, old keys are read with a warning, relative paths resolve against the file.
@Suite struct NodeConfigurationFileTests {
    private func parse(_ json: String, directory: String = "/etc/stoq") throws(ConfigFileError) -> (values: [String: ConfigValue], warnings: [String]) {
        try NodeConfigurationFile.parse(Data(json.utf8), file: "n.json", directory: directory)
    }

    private func refusal(_ json: String) -> String? {
        do {
            _ = try parse(json)
            return nil
        } catch {
            return error.reason
        }
    }

    @Test func keysAreTheFlagsInCamelCase() {
        for key in NodeConfigurationFile.keys {
            if let flag = key.flag {
                #expect(flag == "--" + key.name.reduce(into: "") { $0 += $1.isUppercase ? "-" + $1.lowercased() : String($1) })
            }
        }
        #expect(Set(NodeConfigurationFile.keys.map(\.name)).count == NodeConfigurationFile.keys.count)
    }

    @Test func unknownKeysAndWrongTypesAreOneLineNamingTheKey() {
        #expect(refusal(#"{"cache_bytes": 5}"#) == "config n.json: unknown key 'cache_bytes' (did you mean 'cacheBytes'?); see docs/CONFIG.md for the keys")
        #expect(refusal(#"{"certifcate": "a"}"#)?.contains("(did you mean 'cert'?)") == true)
        #expect(refusal(#"{"zzzz": 1}"#) == "config n.json: unknown key 'zzzz'; see docs/CONFIG.md for the keys")
        #expect(refusal(#"{"cacheBytes": "1 GiB"}"#) == "config n.json: key 'cacheBytes' must be an integer (bytes), not a string; see docs/CONFIG.md")
        #expect(refusal(#"{"cacheBytes": 1.5}"#)?.contains("not a number with a fraction") == true)
        #expect(refusal(#"{"dht": 1}"#)?.contains("key 'dht' must be true or false, not an integer") == true)
        #expect(refusal(#"{"peers": ["10.0.0.1:4433"]}"#)?.contains("'10.0.0.1:4433' is not an IPv6 address") == true)
        #expect(refusal(#"{"peers": [4433]}"#)?.contains("key 'peers' must be a list of IPv6 addresses") == true)
        #expect(refusal(#"{"role": ["edgy"]}"#)?.contains("'edgy' is not a role") == true)
        #expect(refusal(#"["name"]"#)?.contains("must be a JSON object") == true)
        #expect(refusal(#"{"name": "#)?.contains("not valid JSON") == true)
        #expect(refusal(#"{"health": {"interval": 5}}"#)?.contains("unknown key 'health.interval'") == true)
        #expect(refusal(#"{"cert": "a", "certificate": "b"}"#)?.contains("keys 'certificate' (old name) and 'cert' both given") == true)
    }

    @Test func oldKeysAreReadWithAWarningEach() throws {
        let (values, warnings) = try parse(#"""
            {"certificate": "c.pem", "roles": ["edge"], "upstream": ["[::1]:4433"], "peers": ["[::1]:4440"],
             "health": {"intervalMilliseconds": 500, "enabled": false}, "routing": {"enabled": false},
             "throttle": {"totalBytesPerSecond": 1000}, "limits": {"requestTimeoutMilliseconds": 2000},
             "rateLimitBytesPerSecond": 7, "publishers": ["ab"], "latitude": 48.85, "longitude": 2.35}
            """#)
        #expect(warnings.count == 11)
        #expect(values["cert"] == .string("/etc/stoq/c.pem"))
        #expect(values["role"] == .list(["edge"]))
        #expect(values["peers"] == .list(["[::1]:4433"]))
        #expect(values["watch"] == .list(["[::1]:4440"]))
        #expect(values["probeInterval"] == .integer(500) && values["noProbes"] == .bool(true) && values["noRouting"] == .bool(true))
        #expect(values["serveRate"] == .integer(1000) && values["requestTimeoutMs"] == .integer(2000) && values["rateLimit"] == .integer(7))
        #expect(values["location"] == .string("48.85,2.35") && values["publisher"] == .list(["ab"]))
        let c = try NodeConfigurationFile.configuration(values)
        #expect(c.certificate == "/etc/stoq/c.pem" && c.upstream == [PeerAddress("[::1]:4433")!] && c.peers == [PeerAddress("[::1]:4440")!])
        #expect(c.health?.intervalMilliseconds == 500 && c.health?.enabled == false && c.routing?.isEnabled == false)
        #expect(c.throttle?.totalBytesPerSecond == 1000 && c.limits?.requestTimeoutMilliseconds == 2000 && c.rateLimitBytesPerSecond == 7)
    }

    @Test func pathsResolveAgainstTheFileAndDefaultsFollowTheName() throws {
        let (values, warnings) = try parse(#"{"name": "edge-1", "cert": "certs/e.pem", "store": "../var/e", "ca": "/abs/ca.pem", "role": "edge"}"#)
        #expect(warnings.isEmpty)
        let c = try NodeConfigurationFile.configuration(values)
        #expect(c.certificate == "/etc/stoq/certs/e.pem" && c.store == "/etc/var/e" && c.ca == "/abs/ca.pem" && c.roles == ["edge"])
        #expect(c.key == NodeConfigurationFile.certificateDirectory + "/edge-1.key")
        #expect(c.listen == PeerAddress("[::1]:4433")! && c.name == "edge-1")
        let bare = try NodeConfigurationFile.configuration([:])
        #expect(bare.roles == ["origin"] && bare.name == "node" && bare.certificate.hasSuffix("/.stoq/certs/node.pem"))
    }

    @Test func theRenderedConfigurationIsAConfigFileThatRendersTheSame() throws {
        let (values, _) = try parse(#"{"name": "o", "peers": "[::1]:1,[::1]:2", "admin": 9464, "cacheBytes": 4096, "publicRead": true}"#)
        let text = NodeConfigurationFile.render(values)
        let (again, warnings) = try parse(text)
        #expect(warnings.isEmpty)
        #expect(NodeConfigurationFile.render(again) == text)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
        #expect(Set(object.keys) == Set(NodeConfigurationFile.keys.map(\.name)))
        let c = try NodeConfigurationFile.configuration(again)
        #expect(c.admin == PeerAddress("[::1]:9464") && c.cacheBytes == 4096 && c.publicRead == true && c.upstream.count == 2)
    }
}
