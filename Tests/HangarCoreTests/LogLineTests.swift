import FoundationEssentials
import Glibc
import HangarCore
import Logging
import Testing

/// The roles' log lines: one per record, every value escaped, metadata as fields.
@Suite("log lines")
struct LogLineTests {
    /// A key a client may choose (spaces, `=`, quotes, backslashes and controls are valid
    /// in a key): it must neither break a line nor forge a field.
    static let hostile = "a\"b\\c d=e status=ready\nforged=1\u{1b}[2J\u{85}\u{2028}"

    static func record(_ metadata: Logger.Metadata, message: String = "backend ready") -> LineLogHandler.Record {
        LineLogHandler.Record(time: 0, level: .notice, label: "hangar.drone", message: message, source: "HangarDrone", metadata: metadata)
    }

    @Test("times are RFC 3339 UTC with milliseconds")
    func times() {
        #expect(utcTimestamp(0) == "1970-01-01T00:00:00.000Z")
        #expect(utcTimestamp(1_795_703_475_007) == "2026-11-26T14:31:15.007Z")
        #expect(utcTimestamp(951_782_400_999) == "2000-02-29T00:00:00.999Z")
    }

    @Test("JSON: one object, fixed fields first, metadata sorted, hostile text escaped, reserved names moved")
    func json() throws {
        var record = Self.record(
            [
                "backend.id": "bk-0123456789abcdef", "message": "spoofed", "list": [.string("a"), .stringConvertible(2)],
                "nested": ["k": "v\\"], "key": .string(Self.hostile),
            ], message: "a \"quoted\"\nline\u{1}\u{7f}")
        record.error = ("the store is locked", "StoreError")
        let line = record.json
        #expect(
            line == #"{"time":"1970-01-01T00:00:00.000Z","level":"notice","logger":"hangar.drone","message":"a \"quoted\"\nline\u0001\u007f","source":"HangarDrone","error":"the store is locked","error.type":"StoreError","backend.id":"bk-0123456789abcdef","key":"a\"b\\c d=e status=ready\nforged=1\u001b[2J\u0085\u2028","list":["a","2"],"metadata.message":"spoofed","nested":{"k":"v\\"}}"#)
        #expect(!line.contains("\n") && !line.unicodeScalars.contains("\u{1b}"), "one line, no raw controls")
        struct Decoded: Decodable {
            var message: String
            var key: String
            var list: [String]
            var nested: [String: String]
        }
        let decoded = try JSONDecoder().decode(Decoded.self, from: Data(line.utf8))
        #expect(decoded.key == Self.hostile, "the key round-trips exactly")
        #expect(decoded.message == "a \"quoted\"\nline\u{1}\u{7f}" && decoded.list == ["a", "2"] && decoded.nested == ["k": "v\\"])
    }

    @Test("text: TIME LEVEL LOGGER: MESSAGE key=value, a value quoted when it needs to be, nothing forged")
    func text() {
        #expect(Self.record(["error": "locked"]).json.hasSuffix(#","error":"locked"}"#), "metadata's error is the error field")
        #expect(Self.record(["key": "abc\u{202E}fed"]).text.hasSuffix(#"key="abc\u202efed""#), "a bidi override is escaped")
        let plain = Self.record(["backend.id": "bk-0123456789abcdef", "key": "doc-1", "empty": ""]).text
        #expect(plain == #"1970-01-01T00:00:00.000Z notice hangar.drone: backend ready backend.id=bk-0123456789abcdef empty="" key=doc-1"#)
        let hostile = Self.record(["key": .string(Self.hostile)], message: "refused\r\u{1b}[1A").text
        #expect(
            hostile == #"1970-01-01T00:00:00.000Z notice hangar.drone: refused\r\u001b[1A key="a\"b\\c d=e status=ready\nforged=1\u001b[2J\u0085\u2028""#)
    }

    @Test("the handler writes whole lines to its file descriptor, below its level nothing, the error as fields")
    func handler() throws {
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]) }
        struct Locked: Error, CustomStringConvertible {
            var description: String { "locked" }
        }
        var logger = Logger(label: "test.json") { label in LineLogHandler(label: label, format: .json, level: .info, output: ends[1]) }
        logger[metadataKey: "drone"] = "dr-1"
        logger.debug("not written")
        logger.info("backend ready", metadata: ["backend.id": "bk-00000000000000ff", "key": "doc-1"])
        logger.error("recording failed", error: Locked())
        close(ends[1])
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(ends[0], &chunk, chunk.count)
            guard n > 0 else { break }
            bytes += chunk[0..<n]
        }
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n")
        #expect(lines.count == 2 && bytes.last == 10)
        let ready = try JSONDecoder().decode([String: String].self, from: Data(lines[0].utf8))
        #expect(ready["message"] == "backend ready" && ready["level"] == "info" && ready["logger"] == "test.json")
        #expect(ready["backend.id"] == "bk-00000000000000ff" && ready["key"] == "doc-1" && ready["drone"] == "dr-1")
        let failed = try JSONDecoder().decode([String: String].self, from: Data(lines[1].utf8))
        #expect(failed["error"] == "locked" && failed["error.type"] == "Locked" && failed["level"] == "error")
    }
}
