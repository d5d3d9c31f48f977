import Glibc
import Logging

/// A log handler that writes each record as one JSON object on one line of standard
/// error (`hangar … --log-format json`): time (UTC, milliseconds), level, logger, message,
/// then the metadata's keys (backend.id, key, drone, …) as fields of their own, so a log
/// pipeline can index them. One write(2) per record: lines from concurrent tasks do not
/// interleave.
public struct JSONLogHandler: LogHandler {
    /// The fields every line has; a metadata key with one of these names is written as
    /// `metadata.NAME` instead.
    static let fixedFields: Set<String> = ["time", "level", "logger", "message", "source"]

    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level
    let label: String
    let output: Int32

    /// A handler for `label` writing to the file descriptor `output` (standard error by default).
    public init(label: String, level: Logger.Level = .info, output: Int32 = 2) {
        self.label = label
        self.logLevel = level
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let extra = event.metadata { merged.merge(extra) { $1 } }
        var line = Self.line(
            time: wallClockMilliseconds(), level: event.level, label: label, message: "\(event.message)",
            source: event.source, metadata: merged)
        line.append("\n")
        line.withUTF8 { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(output, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0, errno == EINTR { continue }
                guard written > 0 else { return }  // nowhere to report a failed log write
                offset += written
            }
        }
    }

    /// One record as a JSON object (no newline). Metadata keys are sorted, so equal
    /// records give equal lines.
    public static func line(
        time milliseconds: Int64, level: Logger.Level, label: String, message: String, source: String,
        metadata: Logger.Metadata
    ) -> String {
        var out = "{\"time\":\"\(utcTimestamp(milliseconds))\",\"level\":\"\(level)\",\"logger\":"
        appendQuoted(label, to: &out)
        out += ",\"message\":"
        appendQuoted(message, to: &out)
        out += ",\"source\":"
        appendQuoted(source, to: &out)
        for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
            out += ","
            appendQuoted(fixedFields.contains(key) ? "metadata." + key : key, to: &out)
            out += ":"
            appendJSON(value, to: &out)
        }
        out += "}"
        return out
    }

    static func appendJSON(_ value: Logger.Metadata.Value, to out: inout String) {
        switch value {
        case .string(let text): appendQuoted(text, to: &out)
        case .stringConvertible(let convertible): appendQuoted(convertible.description, to: &out)
        case .array(let values):
            out += "["
            for (index, element) in values.enumerated() {
                if index > 0 { out += "," }
                appendJSON(element, to: &out)
            }
            out += "]"
        case .dictionary(let fields):
            out += "{"
            for (index, (key, element)) in fields.sorted(by: { $0.key < $1.key }).enumerated() {
                if index > 0 { out += "," }
                appendQuoted(key, to: &out)
                out += ":"
                appendJSON(element, to: &out)
            }
            out += "}"
        }
    }
}

/// `text` quoted, with the escapes JSON strings (RFC 8259) and TOML basic strings share:
/// quotes, backslashes and control characters.
public func appendQuoted(_ text: String, to out: inout String) {
    out.unicodeScalars.append("\"")
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20 || scalar.value == 0x7f:
            out += "\\u" + String(scalar.value, radix: 16).leftPadded(to: 4)
        default: out.unicodeScalars.append(scalar)
        }
    }
    out.unicodeScalars.append("\"")
}

/// Milliseconds since the epoch as an RFC 3339 UTC time: 2026-11-26T14:27:38.123Z.
public func utcTimestamp(_ milliseconds: Int64) -> String {
    var seconds = time_t(milliseconds / 1000)
    var parts = tm()
    gmtime_r(&seconds, &parts)
    func pad(_ value: Int32, _ width: Int) -> String { String(value).leftPadded(to: width) }
    return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
        + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(Int32(milliseconds % 1000), 3))Z"
}
