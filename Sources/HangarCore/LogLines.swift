import Glibc
import Logging
import Synchronization

/// The roles' log handler (`hangar … --log-format text|json`): one line per record on
/// standard error, written with one write(2) under a process-wide lock, so lines of
/// concurrent tasks never interleave. Every value is escaped, so a hostile key, preface or
/// message can neither break a line nor forge a field.
///
/// - json: one object per line: time (UTC, milliseconds), level, logger, message, source,
///   then the metadata's keys (backend.id, key, drone, …) as fields of their own, and
///   error and error.type when the record carries an error.
/// - text: `TIME LEVEL LOGGER: MESSAGE key=value …`, a value quoted when it holds a space,
///   a `=`, a quote or a character that is not printable.
public struct LineLogHandler: LogHandler {
    public enum Format: String, Sendable, CaseIterable {
        case text, json
    }

    /// The fields every JSON line has; a metadata key with one of these names (or `error`
    /// and `error.type` on a record that carries an error) is written as `metadata.NAME`.
    static let fixedFields: Set<String> = ["time", "level", "logger", "message", "source"]
    static let errorFields: Set<String> = ["error", "error.type"]
    /// One writer at a time, in the whole process.
    private static let writing = Mutex(())

    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level
    let label: String
    let format: Format
    let output: Int32

    /// A handler for `label` writing to the file descriptor `output` (standard error by default).
    public init(label: String, format: Format, level: Logger.Level = .info, output: Int32 = 2) {
        self.label = label
        self.format = format
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
        var record = Record(
            time: wallClockMilliseconds(), level: event.level, label: label, message: "\(event.message)",
            source: event.source, metadata: merged)
        if let error = event.error { record.error = ("\(error)", "\(type(of: error))") }
        var line = format == .json ? record.json : record.text
        line.append("\n")
        Self.writing.withLock { _ in
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
    }

    /// One log record, rendered as a line (without its newline).
    public struct Record: Sendable {
        public var time: Int64
        public var level: Logger.Level
        public var label: String
        public var message: String
        public var source: String
        public var metadata: Logger.Metadata
        /// The error the record carries: its description and its type's name.
        public var error: (description: String, type: String)?

        public init(time: Int64, level: Logger.Level, label: String, message: String, source: String, metadata: Logger.Metadata) {
            self.time = time
            self.level = level
            self.label = label
            self.message = message
            self.source = source
            self.metadata = metadata
        }

        /// A JSON object; metadata keys sorted, so equal records give equal lines.
        public var json: String {
            var out = "{\"time\":\"\(utcTimestamp(time))\",\"level\":\"\(level)\",\"logger\":"
            appendQuoted(label, to: &out)
            out += ",\"message\":"
            appendQuoted(message, to: &out)
            out += ",\"source\":"
            appendQuoted(source, to: &out)
            if let error {
                out += ",\"error\":"
                appendQuoted(error.description, to: &out)
                out += ",\"error.type\":"
                appendQuoted(error.type, to: &out)
            }
            for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
                out += ","
                let taken = LineLogHandler.fixedFields.contains(key) || (error != nil && LineLogHandler.errorFields.contains(key))
                appendQuoted(taken ? "metadata." + key : key, to: &out)
                out += ":"
                Self.appendJSON(value, to: &out)
            }
            return out + "}"
        }

        /// `TIME LEVEL LOGGER: MESSAGE key=value …`; metadata keys sorted.
        public var text: String {
            var out = "\(utcTimestamp(time)) \(level) "
            appendEscaped(label, to: &out)
            out += ": "
            appendEscaped(message, to: &out)
            for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
                out += " "
                let taken = error != nil && LineLogHandler.errorFields.contains(key)
                Self.appendTextValue(taken ? "metadata." + key : key, to: &out)
                out += "="
                switch value {
                case .string(let text): Self.appendTextValue(text, to: &out)
                case .stringConvertible(let convertible): Self.appendTextValue(convertible.description, to: &out)
                case .array, .dictionary: Self.appendJSON(value, to: &out)
                }
            }
            if let error {
                out += " error="
                Self.appendTextValue(error.description, to: &out)
                out += " error.type="
                Self.appendTextValue(error.type, to: &out)
            }
            return out
        }

        static func appendTextValue(_ text: String, to out: inout String) {
            let plain = !text.isEmpty && text.unicodeScalars.allSatisfy { $0 != " " && $0 != "=" && $0 != "\"" && !needsEscape($0) }
            if plain { out += text } else { appendQuoted(text, to: &out) }
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
}

/// A scalar written as an escape: C0 and C1 controls, DEL, the Unicode line and
/// paragraph separators (a log viewer may break a line at any of them), and format
/// characters such as the bidi overrides (which reorder what a reader sees).
func needsEscape(_ scalar: Unicode.Scalar) -> Bool {
    scalar.value < 0x20 || (0x7f...0x9f).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029
        || scalar.properties.generalCategory == .format
}

/// `text` quoted, with the escapes JSON strings (RFC 8259) and TOML basic strings share:
/// quotes, backslashes and the characters `needsEscape` names.
public func appendQuoted(_ text: String, to out: inout String) {
    out.unicodeScalars.append("\"")
    appendEscaped(text, to: &out, quote: true)
    out.unicodeScalars.append("\"")
}

/// `text` with its control characters (and, for a quoted string, quotes and backslashes)
/// escaped.
func appendEscaped(_ text: String, to out: inout String, quote: Bool = false) {
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"" where quote: out += "\\\""
        case "\\" where quote: out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where needsEscape(scalar): out += "\\u" + String(scalar.value, radix: 16).leftPadded(to: 4)
        default: out.unicodeScalars.append(scalar)
        }
    }
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
