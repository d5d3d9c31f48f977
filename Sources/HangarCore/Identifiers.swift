/// A validation failure of an identifier or another value read from outside.
public struct InvalidValue: Error, CustomStringConvertible, Sendable, Equatable {
    /// What was being parsed, e.g. "image name".
    public var what: String
    /// The offending input, shortened for display.
    public var input: String
    /// Why it was refused.
    public var reason: String

    /// Creates the error; the input is cut to 64 characters.
    public init(what: String, input: String, reason: String) {
        self.what = what
        self.input = input.count > 64 ? String(input.prefix(64)) + "…" : input
        self.reason = reason
    }

    public var description: String { "invalid \(what) \"\(input)\": \(reason)" }
}

/// Checks the charset and length shared by every Hangar name.
private func validateName(
    _ value: String, what: String, maxLength: Int, allowed: (Unicode.Scalar) -> Bool
) throws(InvalidValue) {
    if value.isEmpty { throw InvalidValue(what: what, input: value, reason: "must not be empty") }
    if value.utf8.count > maxLength {
        throw InvalidValue(what: what, input: value, reason: "longer than \(maxLength) bytes")
    }
    if let bad = value.unicodeScalars.first(where: { !allowed($0) }) {
        throw InvalidValue(what: what, input: value, reason: "character \"\(bad.escaped(asASCII: true))\" is not allowed")
    }
}

private func isLowerAlnum(_ c: Unicode.Scalar) -> Bool {
    ("a"..."z").contains(c) || ("0"..."9").contains(c)
}

/// The name of an image: lowercase letters, digits, '-', '_' and '.', starting with a
/// letter or digit, at most 64 bytes. It names a directory, so it can never be a path.
public struct ImageName: Hashable, Sendable, CustomStringConvertible {
    /// The validated name.
    public let rawValue: String

    /// Validates `rawValue`.
    public init(_ rawValue: String) throws(InvalidValue) {
        try validateName(rawValue, what: "image name", maxLength: 64) {
            isLowerAlnum($0) || $0 == "-" || $0 == "_" || $0 == "."
        }
        guard let first = rawValue.unicodeScalars.first, isLowerAlnum(first) else {
            throw InvalidValue(what: "image name", input: rawValue, reason: "must start with a letter or a digit")
        }
        self.rawValue = rawValue
    }

    public var description: String { rawValue }
}

/// The id of one sandbox: "sb-" and 16 lowercase hex digits.
public struct SandboxID: Hashable, Sendable, CustomStringConvertible {
    /// The validated id.
    public let rawValue: String

    /// Validates an id read from outside.
    public init(_ rawValue: String) throws(InvalidValue) {
        try validateName(rawValue, what: "sandbox id", maxLength: 19) {
            isLowerAlnum($0) || $0 == "-"
        }
        guard rawValue.hasPrefix("sb-"), rawValue.utf8.count == 19,
            rawValue.dropFirst(3).unicodeScalars.allSatisfy({ $0.properties.isASCIIHexDigit && !("A"..."F").contains($0) })
        else {
            throw InvalidValue(what: "sandbox id", input: rawValue, reason: "expected sb- and 16 hex digits")
        }
        self.rawValue = rawValue
    }

    /// A new random id.
    public static func random() -> SandboxID {
        // swift-format-ignore
        try! SandboxID("sb-" + randomHex16())
    }

    public var description: String { rawValue }
}

/// The id of one backend: "bk-" and 16 lowercase hex digits.
public struct BackendID: Hashable, Sendable, CustomStringConvertible, Comparable {
    /// The validated id.
    public let rawValue: String

    /// Validates an id read from outside.
    public init(_ rawValue: String) throws(InvalidValue) {
        guard rawValue.hasPrefix("bk-"), rawValue.utf8.count == 19,
            rawValue.dropFirst(3).unicodeScalars.allSatisfy({ isLowerAlnum($0) && $0.properties.isASCIIHexDigit })
        else {
            throw InvalidValue(what: "backend id", input: rawValue, reason: "expected bk- and 16 lowercase hex digits")
        }
        self.rawValue = rawValue
    }

    /// A new random id.
    public static func random() -> BackendID {
        // swift-format-ignore
        try! BackendID("bk-" + randomHex16())
    }

    public static func < (a: BackendID, b: BackendID) -> Bool { a.rawValue < b.rawValue }

    public var description: String { rawValue }
}

/// The key a backend holds (a document, a session, a user): 1...255 bytes of UTF-8
/// without control characters. Anything else is up to the application.
public struct KeyName: Hashable, Sendable, CustomStringConvertible {
    /// The validated key.
    public let rawValue: String

    /// Validates a key read from outside.
    public init(_ rawValue: String) throws(InvalidValue) {
        try validateName(rawValue, what: "key", maxLength: 255) { $0.value >= 0x20 && $0.value != 0x7f }
        self.rawValue = rawValue
    }

    public var description: String { rawValue }
}

/// A key's namespace (Plane's key.namespace): keys are unique within one. Empty is the
/// default namespace; otherwise lowercase letters, digits, '-', '_' and '.', at most 64
/// bytes.
public struct NamespaceName: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public static let `default` = NamespaceName(unchecked: "")

    private init(unchecked: String) { rawValue = unchecked }

    /// Validates a namespace read from outside.
    public init(_ rawValue: String) throws(InvalidValue) {
        if !rawValue.isEmpty {
            try validateName(rawValue, what: "namespace", maxLength: 64) {
                isLowerAlnum($0) || $0 == "-" || $0 == "_" || $0 == "."
            }
        }
        self.rawValue = rawValue
    }

    public var description: String { rawValue }
}

/// The name of a drone (or of a cluster or a pool): lowercase letters, digits, '-', '_',
/// '.' and ':', starting with a letter or digit, at most 64 bytes. A cluster is often named
/// after its address ("localhost:9090").
public struct DroneName: Hashable, Sendable, CustomStringConvertible, Comparable {
    public let rawValue: String

    public init(_ rawValue: String) throws(InvalidValue) {
        try validateClusterName(rawValue, what: "drone name")
        self.rawValue = rawValue
    }

    public static func < (a: DroneName, b: DroneName) -> Bool { a.rawValue < b.rawValue }
    public var description: String { rawValue }
}

/// A cluster: the drones that serve one proxy domain. Same charset as `DroneName`.
public struct ClusterName: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public init(_ rawValue: String) throws(InvalidValue) {
        try validateClusterName(rawValue, what: "cluster name")
        self.rawValue = rawValue
    }

    public var description: String { rawValue }
}

/// A pool of drones within a cluster; empty is the default pool.
public struct PoolName: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String

    public static let `default` = PoolName(unchecked: "")

    private init(unchecked: String) { rawValue = unchecked }

    public init(_ rawValue: String) throws(InvalidValue) {
        if !rawValue.isEmpty { try validateClusterName(rawValue, what: "pool name") }
        self.rawValue = rawValue
    }

    public var description: String { rawValue }
}

private func validateClusterName(_ value: String, what: String) throws(InvalidValue) {
    try validateName(value, what: what, maxLength: 64) {
        isLowerAlnum($0) || $0 == "-" || $0 == "_" || $0 == "." || $0 == ":"
    }
    guard let first = value.unicodeScalars.first, isLowerAlnum(first) else {
        throw InvalidValue(what: what, input: value, reason: "must start with a letter or a digit")
    }
}

/// A hostname as the kernel accepts it in a UTS namespace and resolvers expect it:
/// RFC 1123 labels, at most 64 bytes.
public struct Hostname: Hashable, Sendable, CustomStringConvertible {
    /// The validated hostname.
    public let rawValue: String

    /// Validates `rawValue`.
    public init(_ rawValue: String) throws(InvalidValue) {
        try validateName(rawValue, what: "hostname", maxLength: 64) {
            isLowerAlnum($0) || ("A"..."Z").contains($0) || $0 == "-" || $0 == "."
        }
        for label in rawValue.split(separator: ".", omittingEmptySubsequences: false) {
            if label.isEmpty || label.utf8.count > 63 || label.hasPrefix("-") || label.hasSuffix("-") {
                throw InvalidValue(
                    what: "hostname", input: rawValue,
                    reason: "each dot-separated label must be 1 to 63 characters, not starting or ending with '-'")
            }
        }
        self.rawValue = rawValue
    }

    public var description: String { rawValue }
}

/// 16 lowercase hex digits of a random 64-bit value (the system's generator): the body of
/// Hangar's ids.
public func randomHex16() -> String {
    String(UInt64.random(in: 0...UInt64.max), radix: 16).leftPadded(to: 16)
}

extension String {
    /// Padded on the left with `pad` to `width` characters (unchanged when longer).
    public func leftPadded(to width: Int, with pad: Character = "0") -> String {
        count >= width ? self : String(repeating: pad, count: width - count) + self
    }
}

/// `count` bytes from the system's CSPRNG (getrandom), as unpadded base64url: what tokens
/// are made of (32 bytes: 43 characters).
public func randomToken(bytes count: Int = 32) -> String {
    Base64URL.encode(randomBytes(count))
}

/// `count` bytes from the system's CSPRNG, eight per draw (one getrandom call each).
public func randomBytes(_ count: Int) -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    var words = (0..<(count + 7) / 8).map { _ in generator.next() }
    return words.withUnsafeMutableBytes { Array($0.prefix(count)) }
}

/// Unpadded base64url (RFC 4648 §5): safe in a URL's path and in a host name's label.
public enum Base64URL {
    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    static let values: [UInt8] = {
        var values = [UInt8](repeating: 0xff, count: 256)
        for (value, character) in alphabet.enumerated() { values[Int(character)] = UInt8(value) }
        return values
    }()

    public static func encode(_ bytes: some Collection<UInt8>) -> String {
        let bytes = Array(bytes)
        var text: [UInt8] = []
        text.reserveCapacity((bytes.count * 4 + 2) / 3)
        var index = 0
        while index < bytes.count {
            let chunk = bytes[index..<min(index + 3, bytes.count)]
            let value = chunk.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (16 - 8 * UInt32($1.offset)) }
            for position in 0...chunk.count {
                text.append(alphabet[Int((value >> (18 - 6 * UInt32(position))) & 63)])
            }
            index += 3
        }
        return String(decoding: text, as: UTF8.self)
    }

    /// The bytes, or nil when the text is not unpadded base64url (a stray character, a
    /// length no encoding has, or bits left over).
    public static func decode(_ text: some StringProtocol) -> [UInt8]? {
        let characters = Array(text.utf8)
        guard characters.count % 4 != 1 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(characters.count * 3 / 4)
        var index = 0
        while index < characters.count {
            let chunk = characters[index..<min(index + 4, characters.count)]
            var value: UInt32 = 0
            for (position, character) in chunk.enumerated() {
                let digit = values[Int(character)]
                guard digit != 0xff else { return nil }
                value |= UInt32(digit) << (18 - 6 * UInt32(position))
            }
            let count = chunk.count - 1
            for position in 0..<count { bytes.append(UInt8((value >> (16 - 8 * UInt32(position))) & 0xff)) }
            // The bits after the last whole byte must be zero: one encoding per byte string.
            guard value & ((1 << (24 - 8 * UInt32(count))) - 1) == 0 else { return nil }
            index += 4
        }
        return bytes
    }
}
