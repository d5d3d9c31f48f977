/// A number of bytes, parsed from "512m", "2GiB", "1048576" and the like.
public struct ByteSize: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The size in bytes.
    public var bytes: UInt64

    /// A size of `bytes` bytes.
    public init(bytes: UInt64) { self.bytes = bytes }

    /// `n` mebibytes.
    public static func mebibytes(_ n: UInt64) -> ByteSize { ByteSize(bytes: n << 20) }

    /// Parses a decimal number with an optional binary suffix: k, m, g, t (also KiB,
    /// MiB, GiB, TiB, and K/M/G/T with or without a trailing B). Suffixes are powers of 1024.
    public init(parsing text: String) throws(InvalidValue) {
        let digits = text.prefix(while: { $0.isASCII && $0.isNumber })
        let suffix = text.dropFirst(digits.count).lowercased()
        guard !digits.isEmpty, let number = UInt64(digits) else {
            throw InvalidValue(what: "size", input: text, reason: "expected a number with an optional unit, e.g. 512m")
        }
        let shift: UInt64
        switch suffix {
        case "", "b": shift = 0
        case "k", "kb", "kib": shift = 10
        case "m", "mb", "mib": shift = 20
        case "g", "gb", "gib": shift = 30
        case "t", "tb", "tib": shift = 40
        default:
            throw InvalidValue(what: "size", input: text, reason: "unknown unit \"\(suffix)\"; use k, m, g or t")
        }
        let (value, overflow) = number.multipliedReportingOverflow(by: 1 << shift)
        if overflow { throw InvalidValue(what: "size", input: text, reason: "too large") }
        self.bytes = value
    }

    public static func < (a: ByteSize, b: ByteSize) -> Bool { a.bytes < b.bytes }

    public var description: String {
        for (shift, unit) in [(30, "g"), (20, "m"), (10, "k")] {
            if bytes >= 1 << shift && bytes % (1 << shift) == 0 { return "\(bytes >> UInt64(shift))\(unit)" }
        }
        return "\(bytes)"
    }
}
