import HangarProxy
import Testing

/// The proxy's request heads: strict, bounded, and never ambiguous about where a request
/// ends (the classic smuggling pairs are refused, not interpreted).
@Suite("Request heads")
struct RequestHeadTests {
    func parse(_ text: String, limits: HeadLimits = HeadLimits()) throws(HeadError) -> RequestHead {
        try HeadParser.request(Array(text.utf8), limits: limits)
    }

    /// A head is refused with this status, for a reason that says this.
    func expectRefused(_ text: String, _ status: Int, _ reason: String) {
        do {
            _ = try parse(text)
            Issue.record("accepted: \(text.debugDescription)")
        } catch {
            #expect(error.status == status && error.reason.contains(reason), "\(error)")
        }
    }

    @Test("a plain GET: method, target, Host, keep-alive by default in HTTP/1.1")
    func plainGet() throws {
        let head = try parse("GET /tok/path?q=1 HTTP/1.1\r\nHost: Doc-1.Localhost:9090\r\nAccept: */*\r\n\r\n")
        #expect(head.method == "GET" && head.target == "/tok/path?q=1" && head.minorVersion == 1)
        #expect(head.host == "doc-1.localhost:9090")
        #expect(head.body == .none && head.keepAlive && head.upgrade == nil)
        #expect(head.fields == [HeadField("Host", "Doc-1.Localhost:9090"), HeadField("Accept", "*/*")])
    }

    @Test("bodies: Content-Length, chunked; Connection decides keep-alive; a WebSocket upgrade")
    func framing() throws {
        #expect(try parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 12\r\n\r\n").body == .length(12))
        #expect(try parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").body == .none)
        #expect(try parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n").body == .chunked)
        #expect(try !parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").keepAlive)
        #expect(try !parse("GET / HTTP/1.0\r\n\r\n").keepAlive, "HTTP/1.0 closes by default and needs no Host")
        #expect(try parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keepAlive)
        let upgrade = try parse(
            "GET /t/ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\n\r\n")
        #expect(upgrade.upgrade == "websocket")
        #expect(try parse("GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n").upgrade == nil, "no Connection: upgrade")
    }

    @Test("smuggling pairs and ambiguous framing are refused", arguments: [
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n", 400, "more than one Content-Length"),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n", 400, "more than one Content-Length"),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4, 4\r\n\r\n", 400, "Content-Length: not a decimal"),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +4\r\n\r\n", 400, "Content-Length: not a decimal"),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", 400, "Content-Length: not a decimal"),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", 400, "Content-Length: not a decimal"),
        ("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "both Content-Length and Transfer-Encoding"),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n", 400, "both Content-Length and Transfer-Encoding"),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501, "only chunked"),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501, "only chunked"),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n", 501, "only chunked"),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "HTTP/1.0"),
        ("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n", 400, "whitespace before its colon"),
        ("POST / HTTP/1.1\r\nHost: h\r\nX: a\r\n chunked\r\n\r\n", 400, "obsolete line folding"),
        ("POST / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n", 400, "obsolete line folding"),
        ("GET / HTTP/1.1\nHost: h\r\n\r\n", 400, "LF without CR"),
        ("GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", 400, "CR without LF"),
    ] as [(String, Int, String)])
    func smuggling(head: String, status: Int, reason: String) {
        expectRefused(head, status, reason)
    }

    @Test("bad request lines, hosts and values are refused with the reason", arguments: [
        ("GET / HTTP/1.1\r\n\r\n", 400, "no Host field"),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "more than one Host"),
        ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, "Host:"),
        ("GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n", 400, "Host:"),
        ("GET / HTTP/1.1\r\nHost: a@b\r\n\r\n", 400, "Host:"),
        ("GET / HTTP/1.1\r\nHost: h\r\nX-Test: a\u{7f}b\r\n\r\n", 400, "X-Test: a control character"),
        ("GET / HTTP/1.1\r\nHost: h\r\nX-Test: a\u{1}b\r\n\r\n", 400, "X-Test: a control character"),
        ("GET / HTTP/1.1\r\nHost: h\r\nno colon here\r\n\r\n", 400, "without a colon"),
        ("GET / HTTP/1.1\r\nHost: h\r\n: empty\r\n\r\n", 400, "not a token"),
        ("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "METHOD TARGET VERSION"),
        ("GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400, "METHOD TARGET VERSION"),
        ("GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n", 400, "origin-form"),
        ("GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400, "origin-form"),
        ("GET /a\u{1}b HTTP/1.1\r\nHost: h\r\n\r\n", 400, "control character"),
        ("G@T / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "method is not a token"),
        ("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505, "only HTTP/1.1"),
        ("GET / http/1.1\r\nHost: h\r\n\r\n", 505, "only HTTP/1.1"),
        ("\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400, "no request line"),
        ("GET / HTTP/1.1\r\nHost: h\r\n", 400, "does not end with an empty line"),
    ] as [(String, Int, String)])
    func badHeads(head: String, status: Int, reason: String) {
        expectRefused(head, status, reason)
    }

    @Test("limits: head size and field count are 431; the end is found across reads or refused early")
    func limits() throws {
        let limits = HeadLimits(maxBytes: 256, maxFields: 4)
        let many = "GET / HTTP/1.1\r\nHost: h\r\n" + String(repeating: "X-A: b\r\n", count: 4) + "\r\n"
        #expect(throws: HeadError(431, "more than 4 header fields")) { try parse(many, limits: limits) }
        let long = "GET /" + String(repeating: "a", count: 300) + " HTTP/1.1\r\nHost: h\r\n\r\n"
        #expect(throws: HeadError(431, "the request head is over 256 bytes")) { try parse(long, limits: limits) }

        let head = Array("GET / HTTP/1.1\r\nHost: h\r\n\r\nBODY".utf8)
        #expect(try HeadParser.end(of: head.prefix(20), limits: limits) == nil, "not yet")
        #expect(try HeadParser.end(of: head, limits: limits) == head.count - 4, "right after the empty line")
        #expect(try HeadParser.end(of: Array("GET / HTTP/1.1\r\r\n\r\n".utf8), limits: limits) == 19)
        // A slow client that never ends its head is refused once it has sent the limit.
        let endless = Array(repeating: UInt8(ascii: "a"), count: 256)
        #expect(throws: HeadError(431, "the request head is over 256 bytes")) {
            try HeadParser.end(of: endless, limits: limits)
        }
    }

    @Test("field values keep inner spaces and bytes over 127; names and order are kept")
    func values() throws {
        let head = try parse("GET / HTTP/1.1\r\nHost: h\r\nX-Name:  Ada  Lovelace \t\r\nX-Utf8: caf\u{e9}\r\nx-name: 2\r\n\r\n")
        #expect(head.values(of: "x-name") == ["Ada  Lovelace", "2"])
        #expect(head.values(of: "x-utf8") == ["caf\u{e9}"])
        #expect(head.fields.map(\.name) == ["Host", "X-Name", "X-Utf8", "x-name"])
    }
}
