/// A request head as the proxy accepts it: HTTP/1.1 (or 1.0), parsed strictly and within
/// limits, so that the proxy and the backend behind it can never disagree about where a
/// request ends (no request smuggling). What it refuses, it refuses with a status and a
/// reason that names the problem.
public struct RequestHead: Sendable, Equatable {
    public var method: String
    /// The origin-form target ("/token/path?query"), as sent.
    public var target: String
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    public var minorVersion: Int
    /// The fields in order, names as sent.
    public var fields: [HeadField]
    /// The Host field's value (required in HTTP/1.1), lowercased.
    public var host: String?
    /// How the body is delimited.
    public var body: BodyFraming
    /// The client wants the connection kept after this request.
    public var keepAlive: Bool
    /// The protocol it asks to switch to ("websocket"), with Connection: upgrade.
    public var upgrade: String?

    /// The values of a field, by case-insensitive name, in order.
    public func values(of name: String) -> [String] {
        fields.filter { $0.name.lowercased() == name }.map(\.value)
    }
}

/// One header field; the value without surrounding whitespace.
public struct HeadField: Sendable, Equatable {
    public var name: String
    public var value: String

    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// Where a message's body ends.
public enum BodyFraming: Sendable, Equatable {
    case none
    case length(Int64)
    case chunked
    /// Until the connection closes (responses only).
    case untilClose
}

/// Bounds on what a head may be.
public struct HeadLimits: Sendable {
    /// Bytes of the head, request line and final empty line included.
    public var maxBytes = 16 * 1024
    public var maxFields = 100

    public init(maxBytes: Int = 16 * 1024, maxFields: Int = 100) {
        self.maxBytes = maxBytes
        self.maxFields = maxFields
    }
}

/// Why a head was refused, with the status to answer.
public struct HeadError: Error, Sendable, Equatable, CustomStringConvertible {
    public var status: Int
    public var reason: String

    public init(_ status: Int, _ reason: String) {
        self.status = status
        self.reason = reason
    }

    public var description: String { "\(status): \(reason)" }
}

public enum HeadParser {
    /// Where the head in `buffer` ends: the index after its empty line, or nil when it has
    /// not ended yet. A head longer than the limit is an error before it ends.
    public static func end(of buffer: some Collection<UInt8>, limits: HeadLimits) throws(HeadError) -> Int? {
        var state = 0  // how much of CR LF CR LF has been seen
        var index = 0
        for byte in buffer {
            index += 1
            switch (state, byte) {
            case (0, 13), (2, 13): state += 1
            case (1, 10), (3, 10): state += 1
            default: state = byte == 13 ? 1 : 0
            }
            if state == 4 { return index }
            if index >= limits.maxBytes { throw HeadError(431, "the request head is over \(limits.maxBytes) bytes") }
        }
        return nil
    }

    /// A request head: the bytes up to and including its empty line.
    public static func request(_ bytes: some Collection<UInt8>, limits: HeadLimits = HeadLimits()) throws(HeadError)
        -> RequestHead
    {
        let lines = try Self.lines(Array(bytes), limits: limits)
        let (method, target, minor) = try requestLine(lines[0])
        let fields = try Self.fields(lines.dropFirst(), limits: limits)
        var head = RequestHead(
            method: method, target: target, minorVersion: minor, fields: fields, host: nil, body: .none, keepAlive: minor == 1,
            upgrade: nil)

        let hosts = head.values(of: "host")
        guard hosts.count <= 1 else { throw HeadError(400, "more than one Host field") }
        if let host = hosts.first {
            guard isHost(host) else { throw HeadError(400, "Host: not a host name or address with a port") }
            head.host = host.lowercased()
        } else if minor == 1 {
            throw HeadError(400, "no Host field (HTTP/1.1 requires one)")
        }

        let lengths = head.values(of: "content-length")
        let encodings = head.values(of: "transfer-encoding")
        if !encodings.isEmpty {
            guard lengths.isEmpty else { throw HeadError(400, "both Content-Length and Transfer-Encoding") }
            guard minor == 1 else { throw HeadError(400, "Transfer-Encoding in an HTTP/1.0 request") }
            let codings = encodings.flatMap { $0.split(separator: ",") }.map {
                $0.trimmingWhitespace().lowercased()
            }
            guard codings == ["chunked"] else {
                throw HeadError(501, "Transfer-Encoding: only chunked is supported, got \"\(encodings.joined(separator: ", ").prefix(64))\"")
            }
            head.body = .chunked
        } else if !lengths.isEmpty {
            guard lengths.count == 1 else { throw HeadError(400, "more than one Content-Length field") }
            guard let length = decimal(lengths[0]) else { throw HeadError(400, "Content-Length: not a decimal length") }
            head.body = length == 0 ? .none : .length(length)
        }

        let connection = connectionOptions(head.values(of: "connection"))
        if connection.contains("close") {
            head.keepAlive = false
        } else if connection.contains("keep-alive") {
            head.keepAlive = true
        }
        let upgrades = head.values(of: "upgrade")
        if connection.contains("upgrade"), upgrades.count == 1 {
            head.upgrade = Substring(upgrades[0]).trimmingWhitespace().lowercased()
        }
        return head
    }

    // MARK: pieces

    /// The options of Connection fields ("close", "upgrade", field names), lowercased.
    static func connectionOptions(_ values: [String]) -> [String] {
        values.flatMap { $0.split(separator: ",") }.map { $0.trimmingWhitespace().lowercased() }
    }

    /// The head's lines without their CR LF, the final empty one dropped. Every line ends
    /// in CR LF: a bare CR or LF is refused.
    static func lines(_ bytes: [UInt8], limits: HeadLimits) throws(HeadError) -> [ArraySlice<UInt8>] {
        guard bytes.count <= limits.maxBytes else { throw HeadError(431, "the request head is over \(limits.maxBytes) bytes") }
        guard bytes.count >= 4, bytes.suffix(4).elementsEqual([13, 10, 13, 10]) else {
            throw HeadError(400, "the head does not end with an empty line")
        }
        var lines: [ArraySlice<UInt8>] = []
        var start = 0
        var index = 0
        while index < bytes.count - 2 {
            switch bytes[index] {
            case 13:
                guard bytes[index + 1] == 10 else { throw HeadError(400, "a CR without LF in the head") }
                lines.append(bytes[start..<index])
                index += 2
                start = index
            case 10:
                throw HeadError(400, "a line of the head ends in LF without CR")
            default:
                index += 1
            }
        }
        guard let first = lines.first, !first.isEmpty else { throw HeadError(400, "no request line") }
        return lines
    }

    /// "GET /path HTTP/1.1": a token, one space, an origin-form target, one space, the version.
    static func requestLine(_ line: ArraySlice<UInt8>) throws(HeadError) -> (String, String, Int) {
        let parts = line.split(separator: 32, omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw HeadError(400, "the request line is not METHOD TARGET VERSION") }
        guard !parts[0].isEmpty, parts[0].allSatisfy(isTokenByte) else { throw HeadError(400, "the method is not a token") }
        let target = parts[1]
        guard target.first == UInt8(ascii: "/") else {
            throw HeadError(400, "the target must be a path starting with / (origin-form)")
        }
        guard target.count <= 8192, target.allSatisfy({ $0 > 32 && $0 < 127 }) else {
            throw HeadError(400, "the target has a space, a control character or a non-ASCII byte")
        }
        let minor: Int
        switch String(decoding: parts[2], as: UTF8.self) {
        case "HTTP/1.1": minor = 1
        case "HTTP/1.0": minor = 0
        default: throw HeadError(505, "only HTTP/1.1 and HTTP/1.0 are served")
        }
        return (String(decoding: parts[0], as: UTF8.self), String(decoding: target, as: UTF8.self), minor)
    }

    /// "Name: value" lines: a token name right before the colon; a value of visible
    /// characters, spaces and tabs (and bytes over 127), without surrounding whitespace.
    /// A line that starts with whitespace (obs-fold) is refused.
    static func fields(_ lines: ArraySlice<ArraySlice<UInt8>>, limits: HeadLimits) throws(HeadError) -> [HeadField] {
        guard lines.count <= limits.maxFields else { throw HeadError(431, "more than \(limits.maxFields) header fields") }
        var fields: [HeadField] = []
        fields.reserveCapacity(lines.count)
        for line in lines {
            guard let first = line.first, first != 32, first != 9 else {
                throw HeadError(400, "a header line starts with whitespace (obsolete line folding)")
            }
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { throw HeadError(400, "a header line without a colon") }
            let name = line[line.startIndex..<colon]
            guard !name.isEmpty, name.allSatisfy(isTokenByte) else {
                throw HeadError(400, "a header name that is not a token (or has whitespace before its colon)")
            }
            var value = line[(colon + 1)...]
            while let byte = value.first, byte == 32 || byte == 9 { value = value.dropFirst() }
            while let byte = value.last, byte == 32 || byte == 9 { value = value.dropLast() }
            guard value.allSatisfy({ $0 == 9 || ($0 >= 32 && $0 != 127) }) else {
                throw HeadError(400, "\(String(decoding: name, as: UTF8.self).prefix(64)): a control character in the value")
            }
            fields.append(HeadField(String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
        }
        return fields
    }

    /// tchar of RFC 9110.
    static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        default:
            "!#$%&'*+-.^_`|~".utf8.contains(byte)
        }
    }

    /// A Content-Length: decimal digits only, at most 18 of them.
    static func decimal(_ text: String) -> Int64? {
        guard !text.isEmpty, text.utf8.count <= 18, text.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) else { return nil }
        return Int64(text)
    }

    /// A host name, IPv4 address or bracketed IPv6 address, with an optional port.
    static func isHost(_ text: String) -> Bool {
        var host = Substring(text)
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return false }
            let address = host[host.index(after: host.startIndex)..<close]
            guard !address.isEmpty, address.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." }) else { return false }
            host = host[host.index(after: close)...]
            return host.isEmpty || isPort(host)
        }
        if let colon = host.lastIndex(of: ":") {
            guard isPort(host[colon...]) else { return false }
            host = host[..<colon]
        }
        // Letters, digits, '-', '.' and '_': what names and IPv4 addresses are made of.
        return !host.isEmpty && host.utf8.count <= 253
            && host.utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"):
                    true
                default: false
                }
            }
    }

    /// ":" and 1...5 digits.
    static func isPort(_ text: Substring) -> Bool {
        let digits = text.dropFirst()
        return text.first == ":" && (1...5).contains(digits.count) && digits.allSatisfy { $0.isASCII && $0.isNumber }
            && Int(digits)! <= 65535
    }
}

extension Substring {
    func trimmingWhitespace() -> String {
        var text = self
        while let first = text.first, first == " " || first == "\t" { text = text.dropFirst() }
        while let last = text.last, last == " " || last == "\t" { text = text.dropLast() }
        return String(text)
    }
}
