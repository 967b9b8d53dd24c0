import Testing
import STOQExchange
@testable import STOQInterop

@Suite struct HQRequestTests {
    @Test func parsesAndRefusesEscapes() {
        #expect(HQInterop.parseRequest(Array("GET /a/b.bin\r\n".utf8)) == ["a", "b.bin"])
        #expect(HQInterop.parseRequest(Array("GET /a%20b\n".utf8)) == ["a b"])
        #expect(HQInterop.parseRequest(Array("GET /x?y=1\r\n".utf8)) == ["x"])
        #expect(HQInterop.parseRequest(Array("GET /../etc/passwd\r\n".utf8)) == nil)
        #expect(HQInterop.parseRequest(Array("GET /a/%2e%2e/%2e%2e/x\r\n".utf8)) == nil)
        #expect(HQInterop.parseRequest(Array("PUT /x\r\n".utf8)) == nil)
        #expect(HQInterop.parseRequest(Array("GET x\r\n".utf8)) == nil)
        #expect(HQInterop.parseRequest([0xff, 0xfe]) == nil)
    }

    @Test func urlsAreIPv6Only() throws {
        let u = try HQURL("https://[::1]:4433/f.bin")
        #expect(u.host == "::1" && u.port == 4433 && u.path == "/f.bin")
        #expect(throws: NodeError.self) { try HQURL("https://127.0.0.1:4433/f") }
    }
}
