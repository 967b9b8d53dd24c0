import NIOHTTP1
import XCTest
@testable import STOQHTTP

final class HTTPSExchangeStateMachineTests: XCTestCase {
    private func head(_ uri: String = "/", headers: [(String, String)] = []) -> HTTPRequestHead {
        HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: HTTPHeaders(headers))
    }

    func testOneRequestAtATime() {
        var machine = HTTPSExchangeStateMachine(maxHeaderBytes: 1024, maxBodyBytes: 10)
        XCTAssertEqual(machine.receivedHead(head()), .none)
        XCTAssertEqual(machine.receivedBody(4), .none)
        XCTAssertEqual(machine.receivedEnd()?.uri, "/")
        // A head while responding is a broken client.
        guard case .reject(400, _) = machine.receivedHead(head()) else { return XCTFail("a second head must be refused") }
        XCTAssertNil(machine.receivedEnd())
    }

    func testResponseEndReturnsToIdle() {
        var machine = HTTPSExchangeStateMachine(maxHeaderBytes: 1024, maxBodyBytes: 10)
        _ = machine.receivedHead(head("/a"))
        _ = machine.receivedEnd()
        machine.responseEnded()
        XCTAssertEqual(machine.receivedHead(head("/b")), .none)
        XCTAssertEqual(machine.receivedEnd()?.uri, "/b")
    }

    func testBoundsOnHeadersAndBody() {
        var machine = HTTPSExchangeStateMachine(maxHeaderBytes: 100, maxBodyBytes: 10)
        guard case .reject(431, let message) = machine.receivedHead(head(headers: [("x", String(repeating: "a", count: 200))])) else {
            return XCTFail("oversized headers must be refused")
        }
        XCTAssertTrue(message.contains("100 bytes"))
        var other = HTTPSExchangeStateMachine(maxHeaderBytes: 100, maxBodyBytes: 10)
        _ = other.receivedHead(head())
        XCTAssertEqual(other.receivedBody(10), .none)
        guard case .reject(413, _) = other.receivedBody(1) else { return XCTFail("an oversized body must be refused") }
        XCTAssertNil(other.receivedEnd())
    }

    func testNothingHappensAfterClose() {
        var machine = HTTPSExchangeStateMachine(maxHeaderBytes: 100, maxBodyBytes: 10)
        machine.closed()
        XCTAssertEqual(machine.receivedHead(head()), .none)
        XCTAssertNil(machine.receivedEnd())
    }
}
