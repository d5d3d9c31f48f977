/// Where a chunked body ends, found without touching its data: the proxy passes the bytes
/// on unchanged, reads only the size lines, the CR LF after each chunk and the trailers,
/// and moves each chunk's data with splice. Strict, because a backend in a sandbox may be
/// hostile: a size line is hex digits (at most 15) and optional extensions, nothing else;
/// every line ends in CR LF; trailers are bounded. A client's trailers may not carry what
/// the proxy sets or frames by (`x-verified-*`, `x-forwarded-*`, Content-Length,
/// Transfer-Encoding, Host): a backend that merges trailers into its fields would
/// otherwise take a forged identity for the proxy's.
public struct ChunkedFramer: Sendable {
    /// What to do next.
    public enum Step: Sendable, Equatable {
        /// Feed the bytes that follow to `consume` (a size line, a chunk's CR LF, trailers).
        case read
        /// Pass this many bytes of chunk data on, then call `passed`.
        case pass(Int64)
        /// The body has ended.
        case done
    }

    private enum Phase: Equatable {
        case size
        case data(Int64)
        case dataEnd
        case trailers
        case done
    }

    private var phase = Phase.size
    /// The line being read so far.
    private var line: [UInt8] = []
    /// Bytes of trailers read so far.
    private var trailerBytes = 0
    public let maxLine = 4096
    public let maxTrailerBytes = 16 * 1024
    /// The status a malformed body gets: 400 for a request's, 502 for a backend's response.
    let status: Int
    /// A client's body: trailers the proxy owns are refused.
    let guardsTrailers: Bool

    /// A framer for a request's body (`refusingWith: 400`, `guardingTrailers: true`) or a
    /// response's (502).
    public init(refusingWith status: Int, guardingTrailers: Bool = false) {
        self.status = status
        guardsTrailers = guardingTrailers
    }

    /// Trailer prefixes a client may not send (lowercase); the names are `Messages.framing`.
    static let ownedTrailerPrefixes = ["x-verified-", "x-forwarded-"]

    public var step: Step {
        switch phase {
        case .size, .dataEnd, .trailers: .read
        case .data(let count): .pass(count)
        case .done: .done
        }
    }

    /// Takes bytes while `step` is `.read`; returns how many it used (it stops where data
    /// begins or the body ends: the rest belongs to what follows).
    public mutating func consume(_ bytes: some Collection<UInt8>) throws(HeadError) -> Int {
        var used = 0
        for byte in bytes {
            guard step == .read else { break }
            used += 1
            line.append(byte)
            if phase == .trailers {
                trailerBytes += 1
                guard trailerBytes <= maxTrailerBytes else { throw HeadError(status, "chunked trailers over \(maxTrailerBytes) bytes") }
            }
            guard line.count <= maxLine else { throw HeadError(status, "a chunked body's line is over \(maxLine) bytes") }
            guard byte == 10 else { continue }
            guard line.count >= 2, line[line.count - 2] == 13 else { throw HeadError(status, "a chunked line ends in LF without CR") }
            try endOfLine(line.dropLast(2))
            line.removeAll(keepingCapacity: true)
        }
        return used
    }

    /// `count` bytes of chunk data have been passed on.
    public mutating func passed(_ count: Int64) {
        guard case .data(let left) = phase, count <= left else { return }
        phase = left == count ? .dataEnd : .data(left - count)
    }

    private mutating func endOfLine(_ text: ArraySlice<UInt8>) throws(HeadError) {
        guard !text.contains(13) else { throw HeadError(status, "a CR inside a chunked line") }
        switch phase {
        case .size:
            let digits = text.prefix { $0 != UInt8(ascii: ";") }
            guard (1...15).contains(digits.count), digits.allSatisfy(Self.isHexDigit) else {
                throw HeadError(status, "a chunk size that is not 1 to 15 hex digits")
            }
            let extensions = text.dropFirst(digits.count)
            guard extensions.allSatisfy({ $0 == 9 || ($0 >= 32 && $0 != 127) }) else {
                throw HeadError(status, "a control character in a chunk extension")
            }
            let size = digits.reduce(Int64(0)) { $0 << 4 | Int64(Self.hexValue($1)) }
            phase = size == 0 ? .trailers : .data(size)
        case .dataEnd:
            guard text.isEmpty else { throw HeadError(status, "chunk data longer than its size") }
            phase = .size
        case .trailers:
            if text.isEmpty {
                phase = .done
            } else {
                guard let first = text.first, first != 32, first != 9, let colon = text.firstIndex(of: UInt8(ascii: ":")),
                    colon > text.startIndex, text[..<colon].allSatisfy(HeadParser.isTokenByte)
                else { throw HeadError(status, "a malformed trailer field") }
                if guardsTrailers {
                    let name = String(decoding: text[..<colon], as: UTF8.self).lowercased()
                    if Messages.framing.contains(name) || Self.ownedTrailerPrefixes.contains(where: name.hasPrefix) {
                        throw HeadError(status, "a trailer field the proxy owns: \(name)")
                    }
                }
            }
        case .data, .done:
            break
        }
    }

    static func isHexDigit(_ byte: UInt8) -> Bool {
        (48...57).contains(byte) || (65...70).contains(byte) || (97...102).contains(byte)
    }

    static func hexValue(_ byte: UInt8) -> UInt8 {
        switch byte {
        case 48...57: byte - 48
        case 65...70: byte - 55
        default: byte - 87
        }
    }
}
