import HangarProxy
import Testing

/// Chunked bodies framed without reading their data: what the splice pump relies on to
/// know where a request or response ends.
@Suite("Chunked framing")
struct ChunkedFramerTests {
    /// Runs a body through the framer as the pump would, `read` bytes at a time; the bytes
    /// it passed as data, and where the body ended.
    func frame(_ text: String, read: Int = 3) throws(HeadError) -> (data: String, end: Int?) {
        let bytes = Array(text.utf8)
        var framer = ChunkedFramer(refusingWith: 502)
        var index = 0
        var data: [UInt8] = []
        while index < bytes.count {
            switch framer.step {
            case .read:
                index += try framer.consume(bytes[index..<min(bytes.count, index + read)])
            case .pass(let count):
                let take = min(Int(count), read, bytes.count - index)
                data += bytes[index..<index + take]
                index += take
                framer.passed(Int64(take))
            case .done:
                return (String(decoding: data, as: UTF8.self), index)
            }
        }
        return (String(decoding: data, as: UTF8.self), framer.step == .done ? index : nil)
    }

    @Test("sizes, extensions and trailers; the end is found and what follows is left alone")
    func bodies() throws {
        let body = "5\r\nhello\r\nA;name=value\r\n0123456789\r\n0\r\nX-Checksum: 1\r\n\r\n"
        for read in [1, 2, 3, 7, 64] {
            let (data, end) = try frame(body + "GET / HTTP/1.1\r\n", read: read)
            #expect(data == "hello0123456789", "read \(read) at a time")
            #expect(end == body.utf8.count, "read \(read) at a time")
        }
        #expect(try frame("0\r\n\r\n").end == 5)
        #expect(try frame("0\r\n\r\n").data == "")
        #expect(try frame("3\r\nabc\r\n").end == nil, "not ended yet")
    }

    @Test("malformed chunked bodies are refused", arguments: [
        ("5 \r\nhello\r\n0\r\n\r\n", "not 1 to 15 hex digits"),
        (" 5\r\nhello\r\n0\r\n\r\n", "not 1 to 15 hex digits"),
        ("0x5\r\nhello\r\n0\r\n\r\n", "not 1 to 15 hex digits"),
        ("-1\r\n", "not 1 to 15 hex digits"),
        ("\r\n", "not 1 to 15 hex digits"),
        ("1000000000000000\r\n", "not 1 to 15 hex digits"),
        ("5\nhello\r\n0\r\n\r\n", "LF without CR"),
        ("5\r\nhelloX\r\n0\r\n\r\n", "longer than its size"),
        ("5;a\u{1}b\r\nhello\r\n", "control character in a chunk extension"),
        ("0\r\n bad: folded\r\n\r\n", "malformed trailer"),
        ("0\r\nno colon\r\n\r\n", "malformed trailer"),
        ("5\r\r\nhello", "a CR inside"),
    ] as [(String, String)])
    func malformed(body: String, reason: String) {
        do {
            _ = try frame(body)
            Issue.record("accepted: \(body.debugDescription)")
        } catch {
            #expect(error.status == 502)
            #expect(error.reason.contains(reason), "\(error)")
        }
    }

    @Test("a client's trailers may not carry what the proxy sets or frames by; a backend's may")
    func ownedTrailers() throws {
        for name in ["X-Verified-Username", "x-verified-secret", "X-Forwarded-For", "content-length", "Transfer-Encoding", "HOST"] {
            var request = ChunkedFramer(refusingWith: 400, guardingTrailers: true)
            #expect(throws: HeadError(400, "a trailer field the proxy owns: \(name.lowercased())"), "\(name)") {
                _ = try request.consume(Array("0\r\n\(name): x\r\n\r\n".utf8))
            }
            var response = ChunkedFramer(refusingWith: 502)
            _ = try response.consume(Array("0\r\n\(name): x\r\n\r\n".utf8))
            #expect(response.step == .done, "a backend's own trailer \(name) is its business")
        }
        var request = ChunkedFramer(refusingWith: 400, guardingTrailers: true)
        _ = try request.consume(Array("0\r\nX-Checksum: 1\r\nx-verifiedness: 2\r\n\r\n".utf8))
        #expect(request.step == .done, "other trailers pass")
    }

    @Test("lines and trailers are bounded")
    func bounds() {
        #expect(throws: HeadError(502, "a chunked body's line is over 4096 bytes")) {
            try frame("5;" + String(repeating: "x", count: 5000) + "\r\n", read: 512)
        }
        let trailers = "0\r\n" + String(repeating: "X-A: 0123456789012345678901234567890123456789\r\n", count: 400) + "\r\n"
        #expect(throws: HeadError(502, "chunked trailers over 16384 bytes")) { try frame(trailers, read: 512) }
    }
}
