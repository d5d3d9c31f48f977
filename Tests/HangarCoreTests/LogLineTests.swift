import FoundationEssentials
import Glibc
import HangarCore
import Logging
import Testing

/// The JSON log lines: one object per record, escaped, with metadata as fields.
@Suite("JSON log lines")
struct LogLineTests {
    @Test("times are RFC 3339 UTC with milliseconds")
    func times() {
        #expect(utcTimestamp(0) == "1970-01-01T00:00:00.000Z")
        #expect(utcTimestamp(1_795_703_475_007) == "2026-11-26T14:31:15.007Z")
        #expect(utcTimestamp(951_782_400_999) == "2000-02-29T00:00:00.999Z")
    }

    @Test("a record is one JSON object: fixed fields first, metadata sorted, hostile text escaped, reserved names moved")
    func lines() throws {
        let line = JSONLogHandler.line(
            time: 0, level: .notice, label: "hangar.drone", message: "a \"quoted\"\nline\u{1}\u{7f}",
            source: "HangarDrone",
            metadata: [
                "backend.id": "bk-0123456789abcdef", "message": "spoofed", "list": [.string("a"), .stringConvertible(2)],
                "nested": ["k": "v\\"],
            ])
        #expect(
            line == #"{"time":"1970-01-01T00:00:00.000Z","level":"notice","logger":"hangar.drone","message":"a \"quoted\"\nline\u0001\u007f","source":"HangarDrone","backend.id":"bk-0123456789abcdef","list":["a","2"],"metadata.message":"spoofed","nested":{"k":"v\\"}}"#)
        #expect(!line.contains("\n"), "one line per record")
        struct Record: Decodable {
            var message: String
            var list: [String]
            var nested: [String: String]
        }
        let record = try JSONDecoder().decode(Record.self, from: Data(line.utf8))
        #expect(record.message == "a \"quoted\"\nline\u{1}\u{7f}" && record.list == ["a", "2"] && record.nested == ["k": "v\\"])
    }

    @Test("the handler writes whole lines to its file descriptor, below its level nothing")
    func handler() throws {
        var ends: [Int32] = [0, 0]
        #expect(pipe(&ends) == 0)
        defer { close(ends[0]) }
        var logger = Logger(label: "test.json") { label in JSONLogHandler(label: label, level: .info, output: ends[1]) }
        logger[metadataKey: "drone"] = "dr-1"
        logger.debug("not written")
        logger.info("backend ready", metadata: ["backend.id": "bk-00000000000000ff", "key": "doc-1"])
        close(ends[1])
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(ends[0], &chunk, chunk.count)
            guard n > 0 else { break }
            bytes += chunk[0..<n]
        }
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n")
        #expect(lines.count == 1 && bytes.last == 10)
        let record = try JSONDecoder().decode([String: String].self, from: Data(lines[0].utf8))
        #expect(record["message"] == "backend ready" && record["level"] == "info" && record["logger"] == "test.json")
        #expect(record["backend.id"] == "bk-00000000000000ff" && record["key"] == "doc-1" && record["drone"] == "dr-1")
    }
}
