/// A backend's response head, parsed as strictly as a request: a backend runs hostile code,
/// and a response whose end the proxy and the client could read differently would let it
/// answer for the next request on the connection. What it refuses, it refuses with 502.
public struct ResponseHead: Sendable, Equatable {
    public var minorVersion: Int
    public var status: Int
    public var reason: String
    /// The fields in order, names as sent.
    public var fields: [HeadField]
    /// How the body is delimited, given the request it answers.
    public var body: BodyFraming
    /// The backend keeps the connection after this response.
    public var keepAlive: Bool

    /// The values of a field, by case-insensitive name, in order.
    public func values(of name: String) -> [String] {
        fields.filter { $0.name.lowercased() == name }.map(\.value)
    }
}

extension HeadParser {
    /// A response head (the bytes up to and including its empty line) that answers a
    /// request with `method`.
    public static func response(_ bytes: some Collection<UInt8>, method: String, limits: HeadLimits = HeadLimits())
        throws(HeadError) -> ResponseHead
    {
        let lines: [ArraySlice<UInt8>]
        let fields: [HeadField]
        do {
            lines = try Self.lines(Array(bytes), limits: limits)
            fields = try Self.fields(lines.dropFirst(), limits: limits)
        } catch {
            throw HeadError(502, "the backend's response head: \(error.reason)")
        }
        let (minor, status, reason) = try statusLine(lines[0])
        var head = ResponseHead(
            minorVersion: minor, status: status, reason: reason, fields: fields, body: .untilClose, keepAlive: minor == 1)

        let connection = connectionOptions(head.values(of: "connection"))
        if connection.contains("close") {
            head.keepAlive = false
        } else if connection.contains("keep-alive") {
            head.keepAlive = true
        }

        let lengths = head.values(of: "content-length")
        let encodings = head.values(of: "transfer-encoding")
        // RFC 9112, section 6.3, in order.
        if method == "HEAD" || (100..<200).contains(status) || status == 204 || status == 304 {
            head.body = .none
        } else if !encodings.isEmpty {
            guard lengths.isEmpty else { throw HeadError(502, "the backend sent both Content-Length and Transfer-Encoding") }
            let codings = encodings.flatMap { $0.split(separator: ",") }.map { $0.trimmingWhitespace().lowercased() }
            if codings.last == "chunked" {
                guard codings.filter({ $0 == "chunked" }).count == 1 else {
                    throw HeadError(502, "the backend applied chunked twice")
                }
                head.body = .chunked
            } else {
                head.body = .untilClose
            }
        } else if !lengths.isEmpty {
            guard Set(lengths).count == 1, let length = decimal(lengths[0]) else {
                throw HeadError(502, "the backend's Content-Length is not one decimal length")
            }
            head.body = length == 0 ? .none : .length(length)
        }
        if head.body == .untilClose { head.keepAlive = false }
        return head
    }

    /// "HTTP/1.1 200 OK": the version, one space, three digits, a space and a reason
    /// (which may be empty).
    static func statusLine(_ line: ArraySlice<UInt8>) throws(HeadError) -> (Int, Int, String) {
        let text = Array(line)
        guard text.count >= 12, text[8] == 32, text.count == 12 || text[12] == 32 else {
            throw HeadError(502, "the backend's status line is not HTTP/1.x NNN REASON")
        }
        let minor: Int
        switch String(decoding: text[0..<8], as: UTF8.self) {
        case "HTTP/1.1": minor = 1
        case "HTTP/1.0": minor = 0
        default: throw HeadError(502, "the backend does not speak HTTP/1.1 or 1.0")
        }
        let digits = text[9..<12]
        guard digits.allSatisfy({ $0 >= 48 && $0 <= 57 }), let status = Int(String(decoding: digits, as: UTF8.self)),
            (100...599).contains(status)
        else { throw HeadError(502, "the backend's status is not a three-digit code from 100 to 599") }
        let reason = text.count > 13 ? text[13...] : []
        guard reason.allSatisfy({ $0 == 9 || ($0 >= 32 && $0 != 127) }) else {
            throw HeadError(502, "a control character in the backend's reason phrase")
        }
        return (minor, status, String(decoding: reason, as: UTF8.self))
    }
}
